"""Jobs and the Serve app share the local cluster; a job no node can run is stopped.

On the shared 3 x 1-CPU test cluster (``LocalClusterConfig`` defaults: the head offers
``medray_serve``), the local Serve profile's replicas take no logical CPU, so a
preprocess job submitted while the app runs gets every node's CPU. Before, the
replicas' CPU fractions left no node with a whole CPU free and the job's tasks waited
forever. A job whose task asks for more CPUs than any node has is stopped by
``medray job submit`` with the resource and the fix, instead of waiting.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def medray_job(*args: str, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    cmd = [sys.executable, "-m", "medray.cli.main", "job", "submit", *args]
    t0 = time.perf_counter()
    res = subprocess.run(  # one stream, in the order a terminal shows it
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=os.environ,
    )
    return res, time.perf_counter() - t0


def test_preprocess_job_finishes_while_the_serve_app_runs(served_app, medray_home):
    """On the session's test app (conftest.py: local.yaml with every deployment, the web UI
    included, as ``medray serve up`` deploys it)."""
    import ray

    from medray.cluster.local import SERVE_RESOURCE
    from medray.serving.deploy import app_details

    # /health the moment the deploy said RUNNING, before any request: the models are loaded.
    assert served_app.health_at_running["model_loaded"] is True, served_app.health_at_running
    free = ray.available_resources()
    assert free.get(SERVE_RESOURCE, 0.0) < 2.0  # the replicas hold the custom resource
    assert free.get("CPU", 0.0) >= 3.0, free  # ... and leave every node's CPU free

    res, took = medray_job(
        "--stuck-timeout", "240", "--",
        "python", "-m", "jobs.preprocess", "--config", "jobs/configs/preprocess_synthetic.yaml",
        "name=test-coexist",
    )  # fmt: skip
    log = res.stdout
    print(f"preprocess job with the Serve app up: {took:.1f}s")
    assert res.returncode == 0, log[-4000:]
    summary = json.loads((medray_home / "data" / "test-coexist" / "summary.json").read_text())
    assert summary["counts"]["written"] > 0
    assert (app_details(served_app.dashboard, "medray") or {}).get("status") == "RUNNING"
    assert httpx.get(f"{served_app.base}/health", timeout=30).json()["status"] == "healthy"


def test_job_no_node_can_run_is_stopped_with_the_reason(ray_cluster):
    code = (
        "import ray; ray.init(); "
        "print('submitting'); ray.get(ray.remote(num_cpus=2)(lambda: 1).remote())"
    )
    res, took = medray_job("--", "python", "-c", code, timeout=300)
    log = res.stdout
    print(f"unschedulable job stopped after {took:.1f}s")
    assert res.returncode == 2, log[-4000:]
    assert "CPU 2" in log and "the largest node has 1" in log, log[-2000:]
    assert "medray cluster up --cpus-per-node" in log
    # The reason comes before whatever Ray prints about stopping the driver.
    reason = log.index("medray: stopping job")
    assert "SIGTERM" not in log[:reason], log[-3000:]
    assert log.rstrip().endswith("(exit code 2; the reason is above)"), log[-1000:]
    assert took < 150  # not the 300 s stuck timeout: an impossible demand stops at once
