"""`medray cluster up | status | down` as a user runs them, with their own MEDRAY_HOME.

These start clusters of their own (ports distinct from the shared test cluster) and run
before it starts (conftest orders them first).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from medray.cluster.procs import alive

pytestmark = pytest.mark.integration

# MEDRAY_TEST_PORT_OFFSET lets several test runs share one machine (see conftest).
OFF = int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
# Offsets are multiples of 100 (conftest); these sit 50 above the shared cluster's ports.
RAY, DASH, CLIENT, MILVUS = 6529 + OFF, 8415 + OFF, 10251 + OFF, 18681 + OFF
PORTS = ["--ray-port", str(RAY), "--dashboard-port", str(DASH)]
PORTS += ["--client-port", str(CLIENT), "--milvus-port", str(MILVUS)]
MEDRAY = [sys.executable, "-m", "medray.cli.main"]


def run(args, home: Path, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "MEDRAY_HOME": str(home)}
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MEDRAY_MILVUS_URI"):
        env.pop(k, None)
    return subprocess.run(
        [*MEDRAY, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def our_processes(home: Path) -> list[int]:
    """Live pids recorded by a cluster state file (none if there is no state)."""
    state_file = home / "cluster" / "state.json"
    if not state_file.exists():
        return []
    os.environ["MEDRAY_HOME"], old = str(home), os.environ["MEDRAY_HOME"]
    try:
        from medray.cluster import local

        return sorted(local.recorded_pids(local.read_state()))
    finally:
        os.environ["MEDRAY_HOME"] = old


def test_up_status_up_again_down(tmp_path):
    home = tmp_path / "home"
    up = run(["cluster", "up", "--nodes", "3", *PORTS], home)
    try:
        assert up.returncode == 0, up.stderr + up.stdout
        for needle in (
            "Dashboard:",
            f"http://127.0.0.1:{DASH}",
            "Ray address:",
            f"127.0.0.1:{RAY}",
            "Milvus URI:",
            f"http://127.0.0.1:{MILVUS}",
        ):
            assert needle in up.stdout

        status = run(["cluster", "status", "--json"], home)
        assert status.returncode == 0, status.stdout
        info = json.loads(status.stdout)
        assert len(info["alive_nodes"]) == 3 and info["milvus"] == "ok"
        assert sum(n["head"] for n in info["alive_nodes"]) == 1
        custom = sorted(
            k for n in info["alive_nodes"] for k in n["resources"] if k.startswith("medray_node_")
        )
        assert custom == [
            "medray_node_0",
            "medray_node_1",
            "medray_node_2",
        ]  # placement is observable

        pids = our_processes(home)
        assert len(pids) >= 10

        again = run(["cluster", "up", "--nodes", "3", *PORTS], home)
        assert again.returncode == 0 and "already running" in again.stdout
        assert our_processes(home) == pids  # nothing new was started

        env = run(["cluster", "env"], home)
        assert (
            "export RAY_AUTH_MODE=token" in env.stdout
            and f"RAY_API_SERVER_ADDRESS=http://127.0.0.1:{DASH}" in env.stdout
        )

        # Token auth is on: an unauthenticated request to the job API is refused.
        import requests

        assert requests.get(f"http://127.0.0.1:{DASH}/api/jobs/", timeout=5).status_code == 401
    finally:
        pids = our_processes(home)
        down = run(["cluster", "down"], home)
    assert down.returncode == 0, down.stderr
    survivors = [p for p in pids if alive(p)]
    assert not survivors, f"processes started by `cluster up` still run: {survivors}"
    assert not (home / "cluster" / "state.json").exists()
    assert run(["cluster", "status"], home).returncode == 1
    # Milvus data persists across down/up.
    assert (home / "milvus").is_dir()


def test_port_in_use_is_named_and_nothing_starts(tmp_path):
    home = tmp_path / "home"
    with socket.socket() as s:
        s.bind(("127.0.0.1", DASH))
        s.listen()
        res = run(["cluster", "up", "--nodes", "2", *PORTS], home)
    assert res.returncode == 1
    assert f"port {DASH} (dashboard_port) is already in use" in res.stderr
    assert "--dashboard-port" in res.stderr
    assert our_processes(home) == []


def test_unwritable_milvus_dir_is_named_and_nothing_starts(tmp_path):
    home = tmp_path / "home"
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    res = run(
        ["cluster", "up", "--nodes", "2", *PORTS, "--milvus-data-dir", str(blocker / "milvus")],
        home,
    )
    assert res.returncode == 1
    assert "Milvus data dir" in res.stderr and "not writable" in res.stderr
    assert our_processes(home) == []


def test_failure_midway_stops_what_was_started(tmp_path):
    """A start that fails after some processes run (here: a timeout) leaves none behind."""
    home = tmp_path / "home"
    cfg = tmp_path / "cluster.yaml"
    cfg.write_text("nodes: 2\nstart_timeout_s: 0.5\n")
    res = run(["cluster", "up", "--config", str(cfg), *PORTS], home)
    assert res.returncode == 1
    assert "Nothing was left running" in res.stderr
    assert our_processes(home) == []
    out = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True)
    assert out.stdout.strip() == "", f"processes referencing {home} remain: {out.stdout}"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--nodes", "0"], "nodes must be at least 1"),
        (["--nodes", "2", "--ray-port", "25000"], "lies in the range Ray workers use"),
        (
            ["--nodes", "2", "--milvus-port", "9000", "--dashboard-port", "9000"],
            "ports must differ",
        ),
    ],
)
def test_bad_settings_are_refused(tmp_path, args, needle):
    res = run(["cluster", "up", *args], tmp_path / "home")
    assert res.returncode == 2 and needle in res.stderr
