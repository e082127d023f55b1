"""CLIP fine-tune on Ray Train + DeepSpeed: 2 workers, ZeRO-2, a worker killed mid-run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pairs import write_pairs
from worker_kill import submit_and_kill_a_worker

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def test_two_workers_zero2_survive_a_killed_worker_and_reload(ray_cluster, tmp_path, medray_home):
    data = tmp_path / "pairs"
    write_pairs(data, {"train": 128, "validation": 32, "test": 32})
    run = "clip-kill-test"
    rc, out = submit_and_kill_a_worker(
        [
            "python", "-m", "jobs.train_clip", "--config", "jobs/configs/train_clip_tiny.yaml",
            f"data.input={data}", f"run.name={run}", "run.max_failures=2", "clip.epochs=8",
            "clip.batch_size=16", "scaling.num_workers=2", "clip.deepspeed.zero_stage=2",
        ],
        medray_home / "runs" / run,
        max_reports=5,
    )  # fmt: skip
    assert rc == 0, out[-5000:]
    run_dir = medray_home / "runs" / run

    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_at_epochs"], "training did not resume from a checkpoint"
    assert [h["epoch"] for h in summary["history"]] == list(range(8))
    assert len({w["node_id"] for w in summary["workers"]}) == 2  # SPREAD over two nodes
    assert summary["best_val_i2t_acc"] is not None

    import open_clip
    import torch

    model, _, _ = open_clip.create_model_and_transforms(f"local-dir:{summary['best_model']}")
    with torch.no_grad():
        z = model.encode_image(torch.zeros(1, 3, 64, 64))
    assert z.shape == (1, 64) and torch.isfinite(z).all()
