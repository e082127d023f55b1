"""The embedded default cluster: several Ray nodes and a Milvus Lite server on one machine.

``up`` starts a Ray head and ``nodes - 1`` worker nodes as separate ``ray start``
processes (each with its own CPUs, memory and a ``medray_node_<i>`` resource, so where
work lands is visible; the head also offers ``serve_cpus`` of the ``medray_serve``
resource, which the local Serve app's replicas ask for instead of CPUs, so that jobs'
whole-CPU tasks still find a free CPU while the app runs) plus ``milvus-lite server`` with a persistent data folder. Every
process runs in a process group of its own, recorded in ``$MEDRAY_HOME/cluster/state.json``
as soon as it starts, so ``down`` stops exactly those processes (and their children,
such as job drivers) and nothing else; ``ray stop`` would kill every Ray on the machine.

Ray token authentication is on (``RAY_AUTH_MODE=token``, token in ``~/.ray/auth_token``);
``client_env`` gives the variables a client needs, which the CLI sets for its own calls.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medray.cluster import procs
from medray.cluster.demands import SERVE_RESOURCE
from medray.cluster.milvus_server import milvus_check, spawn_milvus
from medray.cluster.state import (
    WORKER_PORTS,
    ClusterError,
    ClusterState,
    LocalClusterConfig,
    auth_token_path,
    client_env,
    ensure_auth_token,
    executable,
    read_state,
    state_path,
    write_state,
)
from medray.paths import cluster_dir, medray_home

log = logging.getLogger(__name__)

GiB = 1024**3


def _temp_dir() -> str:
    # Unix socket paths are limited to ~107 bytes, so Ray's temp dir must stay short.
    digest = hashlib.sha256(str(medray_home()).encode()).hexdigest()[:8]
    return str(Path(tempfile.gettempdir()) / f"medray-{digest}")


def _check_inputs(cfg: LocalClusterConfig) -> None:
    for name in ("ray_port", "dashboard_port", "client_port", "milvus_port"):
        port = getattr(cfg, name)
        if not procs.port_free(cfg.host, port):
            owner = procs.port_owner(port)
            flag = "--" + name.replace("_", "-")
            raise ClusterError(
                f"port {port} ({name}) is already in use{' by ' + owner if owner else ''}; "
                f"choose a free one with {flag} or stop that process"
            )
    data = cfg.milvus_dir()
    try:
        data.mkdir(parents=True, exist_ok=True)
        probe = data / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise ClusterError(
            f"Milvus data dir {data} is not writable ({e.strerror or e}); pass a writable --milvus-data-dir"
        ) from e


def _wait_exit(proc: subprocess.Popen, log_file: Path, timeout: float) -> None:
    """Wait for ``ray start`` to finish daemonising its node; raise with its log on failure."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = -1
    if rc != 0:
        tail = log_file.read_text(errors="replace")[-1500:] if log_file.exists() else ""
        raise ClusterError(f"`ray start` failed (exit {rc}); log {log_file}:\n{tail}")


def _node_cmd(cfg: LocalClusterConfig, index: int, temp_dir: str) -> list[str]:
    cmd = [
        executable("ray"),
        "start",
        f"--node-ip-address={cfg.host}",
        f"--num-cpus={cfg.cpus_per_node}",
        f"--memory={int(cfg.memory_per_node_gb * GiB)}",
        f"--object-store-memory={int(cfg.object_store_per_node_gb * GiB)}",
        "--resources=" + json.dumps(_node_resources(cfg, index)),
        f"--dashboard-agent-listen-port={procs.free_port(cfg.host)}",
        f"--metrics-export-port={procs.free_port(cfg.host)}",
        f"--min-worker-port={WORKER_PORTS[0]}",
        f"--max-worker-port={WORKER_PORTS[1]}",
        "--disable-usage-stats",
        "--log-style=record",
        # One temp dir per node: nodes on one machine must not share runtime_resources/,
        # where each node's agent unpacks (and re-unpacks) the job's working dir.
        f"--temp-dir={temp_dir}/n{index}",
    ]
    if index == 0:
        cmd += [
            "--head",
            f"--port={cfg.ray_port}",
            f"--dashboard-host={cfg.host}",
            f"--dashboard-port={cfg.dashboard_port}",
            f"--ray-client-server-port={cfg.client_port}",
        ]
    else:
        cmd.append(f"--address={cfg.host}:{cfg.ray_port}")
    return cmd


def _node_resources(cfg: LocalClusterConfig, index: int) -> dict[str, float]:
    res = {f"medray_node_{index}": 1.0}
    if index == 0 and cfg.serve_cpus > 0:
        res[SERVE_RESOURCE] = float(cfg.serve_cpus)
    return res


def up(cfg: LocalClusterConfig) -> tuple[ClusterState, bool]:
    """Start the local cluster; return ``(state, started)``.

    ``started`` is False when the same cluster already runs (``up`` twice is safe).
    On any failure everything started so far is stopped again before the error is raised.
    """
    existing = read_state()
    if existing is not None:
        health = status(existing)
        if health["healthy"]:
            if existing.config != asdict(cfg):
                differ = sorted(
                    k for k, v in asdict(cfg).items() if existing.config.get(k, "(unset)") != v
                )
                raise ClusterError(
                    "a local cluster with other settings is already running "
                    f"({existing.config['nodes']} nodes; differing: {', '.join(differ)}); "
                    "run `medray cluster down` first, then `medray cluster up`"
                )
            return existing, False
        log.warning("found a stale or broken local cluster; stopping its leftovers first")
        down()

    _check_inputs(cfg)
    token = ensure_auth_token()
    temp_dir = _temp_dir()
    logs = cluster_dir() / "logs"
    state = ClusterState(
        config=asdict(cfg),
        started_at=time.time(),
        temp_dir=temp_dir,
        ray_address=f"{cfg.host}:{cfg.ray_port}",
        dashboard_url=f"http://{cfg.host}:{cfg.dashboard_port}",
        milvus_uri=f"http://{cfg.host}:{cfg.milvus_port}",
    )
    env = {
        **os.environ,
        **client_env(state),
        "RAY_USAGE_STATS_ENABLED": "0",
        "PYTHONUNBUFFERED": "1",
        # Job entrypoints say `python`: make it this environment's interpreter.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    try:
        state.processes.append(spawn_milvus(cfg, env, logs / "milvus.log"))
        write_state(state)
        for i in range(cfg.nodes):
            role = "head" if i == 0 else f"worker-{i}"
            log_file = logs / f"{role}.log"
            # `ray start` daemonises the node's processes into its new process group;
            # record the group before waiting so a failure still stops all of them.
            proc = procs.start_group(_node_cmd(cfg, i, temp_dir), env, log_file)
            state.processes.append(
                {
                    "role": role,
                    "pid": proc.pid,
                    "pgid": proc.pid,
                    "log": str(log_file),
                    **(procs.identity(proc.pid) or {}),
                }
            )
            write_state(state)
            _wait_exit(proc, log_file, cfg.start_timeout_s)
            _record_members(state)
        _wait_ready(state, cfg, token)
    except BaseException:
        _record_members(state)  # what started moments ago, before stopping it
        down()
        raise
    return state, True


def _record_members(state: ClusterState) -> None:
    """Record the identity of every live process in the cluster's groups (the daemons
    ``ray start`` left behind), so ``down`` can check them before signalling."""
    known = {m["pid"] for m in state.members}
    for pid in sorted(procs.group_members(state.pgids, state.started_at) - known):
        ident = procs.identity(pid)
        if ident is not None:
            state.members.append(ident)
    write_state(state)


def _wait_ready(state: ClusterState, cfg: LocalClusterConfig, token: str) -> None:
    deadline = time.monotonic() + cfg.start_timeout_s
    while True:
        nodes = alive_nodes(state, token)
        if nodes is not None and len(nodes) >= cfg.nodes:
            break
        if time.monotonic() > deadline:
            raise ClusterError(
                f"only {len(nodes or [])} of {cfg.nodes} Ray nodes came up in {cfg.start_timeout_s:.0f}s; see {cluster_dir() / 'logs'}"
            )
        time.sleep(1.0)
    remaining = max(5.0, deadline - time.monotonic())
    err = milvus_check(state.milvus_uri, timeout=remaining)
    if err is not None:
        raise ClusterError(
            f"Milvus Lite at {state.milvus_uri} did not answer: {err}; see {cluster_dir() / 'logs' / 'milvus.log'}"
        )


def alive_nodes(state: ClusterState, token: str | None = None) -> list[dict[str, Any]] | None:
    """Alive Ray nodes from the dashboard's state API, or None if it does not answer."""
    import requests

    token = token or (ensure_auth_token() if auth_token_path().is_file() else "")
    try:
        r = requests.get(
            f"{state.dashboard_url}/api/v0/nodes",
            params={"limit": 1000, "detail": "true"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=5,
        )
        if r.status_code != 200:
            return None
        nodes = r.json()["data"]["result"]["result"]
    except (requests.RequestException, ValueError, KeyError):
        return None
    return [n for n in nodes if n.get("state") == "ALIVE"]


def status(state: ClusterState | None = None) -> dict[str, Any]:
    """Health of the recorded cluster: processes, alive Ray nodes, Milvus."""
    state = state or read_state()
    if state is None:
        return {"running": False, "healthy": False}
    procs_alive = {
        p["role"]: procs.alive(p["pid"]) or bool(procs.group_members([p["pgid"]], state.started_at))
        for p in state.processes
    }
    nodes = alive_nodes(state) if procs_alive.get("head") else None
    milvus_err = (
        milvus_check(state.milvus_uri, timeout=5.0) if procs_alive.get("milvus") else "not running"
    )
    expected = state.config["nodes"]
    healthy = (
        nodes is not None
        and len(nodes) >= expected
        and milvus_err is None
        and all(procs_alive.values())
    )
    return {
        "running": True,
        "healthy": healthy,
        "expected_nodes": expected,
        "alive_nodes": [
            {
                "node_id": n["node_id"],
                "head": bool(n.get("is_head_node")),
                "resources": {
                    k: v
                    for k, v in n.get("resources_total", {}).items()
                    if not k.startswith("node:")
                },
            }
            for n in (nodes or [])
        ],
        "milvus": "ok" if milvus_err is None else milvus_err,
        "processes": procs_alive,
        "ray_address": state.ray_address,
        "dashboard_url": state.dashboard_url,
        "milvus_uri": state.milvus_uri,
    }


def recorded_pids(state: ClusterState) -> set[int]:
    """Every live process that belongs to the recorded cluster, and nothing else.

    A recorded pid counts only while the process at it has the start time and command
    line recorded when it started (pids are reused). A process group counts while one of
    its verified processes lives (its id cannot be reused meanwhile); then its other
    members count too. Descendants of those count (job drivers, Ray workers).
    """
    verified: set[int] = set()
    for record in [*state.processes, *state.members]:
        if procs.same_process(record):
            verified.add(int(record["pid"]))
        elif procs.alive(int(record["pid"])):
            log.warning(
                "pid %s (%s) is not the process the cluster started (start time or "
                "command line differ); leaving it alone",
                record["pid"],
                record.get("role", "member"),
            )
    groups: set[int] = set()
    for pid in verified:
        with contextlib.suppress(OSError):
            groups.add(os.getpgid(pid))
    members = procs.group_members(groups & set(state.pgids), state.started_at)
    return procs.with_descendants(verified | members)


def down() -> list[int]:
    """Stop exactly the processes ``up`` started; return the pids stopped.

    Raises:
        ClusterError: some process survived SIGKILL (the state file is kept).
    """
    state = read_state()
    if state is None:
        return []
    pids = recorded_pids(state)
    left = procs.terminate(pids)
    # A second pass catches processes spawned while the first was stopping.
    left |= procs.terminate(recorded_pids(state) - left)
    if left:
        raise ClusterError(f"could not stop processes {sorted(left)}; state kept in {state_path()}")
    state_path().unlink(missing_ok=True)
    shutil.rmtree(state.temp_dir, ignore_errors=True)
    return sorted(pids)
