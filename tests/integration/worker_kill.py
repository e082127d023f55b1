"""Submit a training job and SIGKILL one of its Ray Train workers once a checkpoint is
registered, so the test can check that the run restarts and resumes from it.

Shared by the CLIP, SFT and GRPO fault-tolerance tests. Two things made an earlier, per-test
version flaky in the full suite: it counted checkpoint folders on disk (a folder exists
before the controller has registered it, so a restart could find no checkpoint and start
over), and it listed every alive RayTrainWorker on the shared cluster (a worker of some
other run could be the one killed). Here the kill waits for the controller's own snapshot
(``checkpoint_manager_snapshot.json``) to list a checkpoint, and only actors that did not
exist before the job was submitted are candidates.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SNAPSHOT = "checkpoint_manager_snapshot.json"


def _train_workers() -> list:
    from ray.util.state import list_actors

    return list_actors(filters=[("class_name", "=", "RayTrainWorker")], limit=10_000)


def alive_train_workers() -> list:
    return [a for a in _train_workers() if a.state == "ALIVE"]


def checkpoint_progress(run_dir: Path) -> tuple[bool, int]:
    """(a checkpoint is registered, reports processed) from the Train controller's snapshot."""
    try:
        state = json.loads((run_dir / SNAPSHOT).read_text())
    except (FileNotFoundError, json.JSONDecodeError):  # not written yet, or mid-write
        return False, 0
    return state.get("latest_checkpoint_result") is not None, int(state["current_report_index"])


def submit_and_kill_a_worker(
    job_args: list[str],
    run_dir: Path,
    *,
    workers: int = 2,
    max_reports: int,
    timeout_s: float = 900,
) -> tuple[int, str]:
    """Run ``medray job submit -- <job_args>``; kill one new worker after a registered checkpoint.

    The kill lands only while the controller has processed at most ``max_reports`` reports
    (a kill after the last checkpoint would test nothing). Returns the submit's exit code
    and output; fails the test if no worker could be killed in that window.
    """
    before = {a.actor_id for a in _train_workers()}
    cmd = [sys.executable, "-m", "medray.cli.main", "job", "submit", "--", *job_args]
    proc = subprocess.Popen(
        cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    killed = None
    ours: list = []  # this run's workers, found once through the (slow) state API
    deadline = time.monotonic() + timeout_s
    try:
        while killed is None and time.monotonic() < deadline and proc.poll() is None:
            registered, reports = checkpoint_progress(run_dir)
            if reports > max_reports:
                break  # too late: the run would end before a restart mattered
            if len(ours) < workers:
                # The state API call takes seconds on a loaded machine; made only until the
                # workers are known, so the kill follows the checkpoint by one short poll.
                ours = [a for a in alive_train_workers() if a.actor_id not in before]
            elif registered:
                try:
                    os.kill(ours[-1].pid, signal.SIGKILL)  # a dead worker, mid-training
                    killed = ours[-1]
                except ProcessLookupError:  # the run restarted on its own: look again
                    ours = []
            time.sleep(0.05 if len(ours) == workers else 0.3)
        out, _ = proc.communicate(timeout=timeout_s)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed is not None, "the run got past its kill window before a worker could be killed"
    return proc.returncode, out
