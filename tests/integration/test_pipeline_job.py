"""The main job through `ray job submit` on the shared 3-node cluster.

One run covers the data stages (synthetic datasets -> preprocess job) and the training
smoke test: loss finite and falling, parameters changed,
checkpoints written, and a (deliberately injected) worker failure resumed from the
latest checkpoint by Ray Train's FailureConfig.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medray.models import weights_checksum

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_pipeline_uses_every_node_trains_and_resumes(ray_cluster, tiny_models, medray_home):
    run_name = "test-pipeline"
    cmd = [
        sys.executable, "-m", "medray.cli.main", "job", "submit", "--",
        "python", "-m", "jobs.pipeline", "--config", "jobs/configs/pipeline_tiny.yaml",
        f"run.name={run_name}", "records.num_records=600",
        "sft.optim.max_steps=12", "sft.optim.save_steps=4", "sft.fault.fail_at_step=7",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=os.environ)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert "injected failure at step 7" in res.stdout + res.stderr

    summary = json.loads((medray_home / "runs" / run_name / "summary.json").read_text())
    assert summary["cluster_nodes"] == 3
    # Stages 1-2: synthetic datasets in real layouts through the preprocess job.
    pre = summary["preprocess"]
    c = pre["counts"]
    assert c["in"] == c["written"] + c["quarantined"] + c["duplicates"] and c["written"] > 0
    assert set(pre["per_task"]) == {"report", "vqa", "mcq"}
    assert (Path(pre["output"]) / "_SUCCESS").is_file()
    assert summary["records"]["rows"] == 600
    assert len(summary["records"]["rows_per_node"]) >= 2  # the Ray Data pass spread out
    train = summary["train"]
    assert len(set(train["worker_nodes"])) == 2  # SPREAD: one worker per node
    assert len(summary["nodes_used"]) == 3
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["loss_last"] < train["loss_first"] - 0.5
    assert train["steps"] == 12
    assert train["resumed_from_step"] == 4  # restarted from the step-4 checkpoint, not from 0

    final = Path(train["checkpoint"])
    assert (final / "medray_final.json").is_file() and (final / "model.safetensors").is_file()
    assert weights_checksum(final) != weights_checksum(
        tiny_models["tiny-lm"]
    )  # it learned something
    hf_checkpoints = [
        p
        for p in (medray_home / "runs" / run_name).glob("checkpoint_*")
        if (p / "checkpoint").is_dir()
    ]
    assert hf_checkpoints, "intermediate HF checkpoints were reported to Ray Train"
    parquet = list(Path(summary["records"]["parquet"]).glob("*.parquet"))
    assert parquet
