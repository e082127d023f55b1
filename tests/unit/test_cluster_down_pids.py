"""`medray cluster down` signals only processes it started: a recorded pid whose process
now has another start time or command line (the pid was reused) is left alone."""

from __future__ import annotations

import subprocess
import time

import pytest

from medray.cluster import local, procs

pytestmark = pytest.mark.unit


@pytest.fixture()
def sleeper():
    """A process of this test's own (the 'unrelated' process that got a recorded pid)."""
    proc = subprocess.Popen(["sleep", "120"], start_new_session=True)
    yield proc
    if proc.poll() is None:
        proc.kill()  # our own child, by its pid
    proc.wait(10)


def _state(tmp_path, record: dict) -> local.ClusterState:
    state = local.ClusterState(
        config={},
        started_at=time.time() - 60,
        temp_dir=str(tmp_path / "ray-tmp"),
        ray_address="127.0.0.1:1",
        dashboard_url="",
        milvus_uri="",
        processes=[{"role": "milvus", "pgid": record["pid"], "log": "", **record}],
    )
    local.write_state(state)
    return state


@pytest.mark.parametrize(
    "change",
    [
        {"create_time": -100.0},  # started at another time: the pid was reused
        {"cmdline": ["milvus-lite", "server"]},  # another program
        {"create_time": None, "cmdline": None},  # a record without identity (old state)
    ],
)
def test_down_leaves_a_process_whose_record_does_not_match(tmp_path, sleeper, change):
    record = procs.identity(sleeper.pid)
    assert record is not None
    if change.get("create_time") is not None:
        record["create_time"] += change["create_time"]
    if change.get("cmdline"):
        record["cmdline"] = change["cmdline"]
    if "create_time" in change and change["create_time"] is None:
        del record["create_time"], record["cmdline"]
    state = _state(tmp_path, record)
    assert local.recorded_pids(state) == set()
    assert local.down() == []
    assert sleeper.poll() is None and procs.alive(sleeper.pid)
    assert local.read_state() is None  # the stale record is dropped, nothing signalled


def test_down_stops_a_process_whose_record_matches(tmp_path, sleeper):
    state = _state(tmp_path, procs.identity(sleeper.pid))
    assert local.recorded_pids(state) == {sleeper.pid}
    assert local.down() == [sleeper.pid]
    assert sleeper.wait(10) is not None
