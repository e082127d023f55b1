"""The local cluster's Milvus Lite server process: start it, kill it (a fault drill),
start it again, and wait until it answers.

``medray.cluster.local.up`` starts it with the Ray nodes and records it in the cluster
state, so ``down`` stops it with everything else.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

from medray.cluster import procs
from medray.cluster.state import (
    ClusterError,
    ClusterState,
    LocalClusterConfig,
    client_env,
    executable,
    write_state,
)
from medray.paths import cluster_dir


def spawn_milvus(cfg: LocalClusterConfig, env: dict[str, str], log_file: Path) -> dict[str, Any]:
    """Start the Milvus Lite server in a process group of its own; its process record."""
    cmd = [executable("milvus-lite"), "server", "--data-dir", str(cfg.milvus_dir())]
    proc = procs.start_group(
        [*cmd, "--host", cfg.host, "--port", str(cfg.milvus_port)], env, log_file
    )
    return {
        "role": "milvus",
        "pid": proc.pid,
        "pgid": proc.pid,
        "log": str(log_file),
        **(procs.identity(proc.pid) or {}),
    }


def _milvus_record(state: ClusterState) -> dict[str, Any]:
    for record in state.processes:
        if record["role"] == "milvus":
            return record
    raise ClusterError("the recorded cluster has no Milvus process")


def kill_milvus(state: ClusterState) -> int:
    """SIGKILL the cluster's Milvus Lite server (a fault drill: ``benchmarks/faults.py``);
    only the process ``up`` recorded (start time and command line checked). Its pid.

    Raises:
        ClusterError: the recorded Milvus process no longer runs.
    """
    record = _milvus_record(state)
    if not procs.same_process(record):
        raise ClusterError(f"pid {record['pid']} is not the cluster's Milvus (not running)")
    os.killpg(int(record["pgid"]), signal.SIGKILL)
    return int(record["pid"])


def start_milvus(state: ClusterState) -> int:
    """Start the cluster's Milvus Lite server again after it stopped (same data folder and
    port), recorded so that ``down`` stops it. Its pid.

    Raises:
        ClusterError: the recorded Milvus process still runs.
    """
    record = _milvus_record(state)
    if procs.same_process(record):
        raise ClusterError(f"the cluster's Milvus (pid {record['pid']}) still runs")
    cfg = LocalClusterConfig(**state.config)
    env = {**os.environ, **client_env(state)}
    record.clear()
    record.update(spawn_milvus(cfg, env, cluster_dir() / "logs" / "milvus.log"))
    write_state(state)
    return int(record["pid"])


def milvus_check(uri: str, timeout: float = 10.0) -> str | None:
    """None if Milvus at ``uri`` answers ``list_collections()`` within ``timeout``, else the error."""
    from pymilvus import MilvusClient

    from medray.retrieval.connection import GRPC_OPTIONS

    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            client = MilvusClient(
                uri=uri, timeout=min(5.0, timeout), grpc_options=dict(GRPC_OPTIONS)
            )
            try:
                client.list_collections()
                return None
            finally:
                client.close()
        except Exception as e:  # pymilvus raises many types while the server starts
            last = f"{type(e).__name__}: {e}"
            time.sleep(0.5)
    return last
