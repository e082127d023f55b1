"""jobs/train_sft.py on the shared cluster: the tiny reasoner under ZeRO-3 with a worker
killed mid-run (resumed from the last checkpoint, then evaluated), an adapter that loads
with peft and merges, the medical-QA model, and an empty dataset refused before any worker
starts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from sft_data import write_sft_data
from worker_kill import submit_and_kill_a_worker

from jobs.train_sft import SFTInputError, TrainSFTConfig, run
from medray.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sft_data(tmp_path_factory) -> Path:
    return write_sft_data(tmp_path_factory.mktemp("sft") / "data", n_train=48, n_test=12)


def _cfg(name: str, data: Path, run_name: str, *overrides: str) -> TrainSFTConfig:
    return load_config(
        TrainSFTConfig,
        REPO / "jobs" / "configs" / f"{name}.yaml",
        [f"data.input={data}", f"run.name={run_name}", *overrides],
    )


def _check_adapter(summary: dict) -> None:
    """The final checkpoint is a peft adapter: it loads, changes the model, and merges."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    base = AutoModelForImageTextToText.from_pretrained(summary["base_model"])
    before = {k: v.clone() for k, v in base.state_dict().items()}
    peft_model = PeftModel.from_pretrained(base, summary["adapter"])
    merged = peft_model.merge_and_unload()
    after = merged.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert any("visual" in k for k in changed), "the vision tower (modules_to_save) was not saved"
    assert any("q_proj" in k for k in changed), "the LoRA deltas were not merged"


def test_reasoner_zero3_survives_a_killed_worker_resumes_evaluates_and_saves_an_adapter(
    ray_cluster, sft_data, medray_home
):
    """One run for what were two (ZeRO-3 training + evaluation, and a ZeRO-2 run with a
    killed worker; ZeRO-2 SFT runs in the pipeline tests): the partitioned ZeRO-3 state is
    the harder one to checkpoint and resume."""
    run_name = "sft-z3-kill-test"
    run_dir = medray_home / "runs" / run_name
    rc, out = submit_and_kill_a_worker(
        [
            "python", "-m", "jobs.train_sft", "--config", "jobs/configs/sft_reasoner_tiny.yaml",
            f"data.input={sft_data}", f"run.name={run_name}", "run.max_failures=2",
            "sft.optim.max_steps=16", "sft.optim.save_steps=2", "sft.deepspeed.zero_stage=3",
        ],
        run_dir,
        max_reports=5,
    )  # fmt: skip
    assert rc == 0, out[-5000:]
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["steps"] == 16 and len(s["workers"]) == 2
    assert s["resumed_from_step"] >= 2, "training did not resume from a checkpoint"
    assert len({w["train_order"] for w in s["workers"]}) == 1  # one row order on both ranks
    assert math.isfinite(s["loss_last"]) and s["loss_last"] < s["loss_first"]
    ev = s["eval"]
    assert ev["n"] == 12 and 0.0 <= ev["json_validity"] <= 1.0
    assert ev["closed_majority_rate"] == 0.5 and ev["closed_accuracy"] is not None
    _check_adapter(s)


def test_medqa_trains_and_evaluates(ray_cluster, sft_data):
    """The text medical-QA model (the summariser's SFT runs in test_pipeline_job.py: two
    workers, a resumed failure, ROUGE on held-out reports)."""
    s = run(
        _cfg("sft_medqa_tiny", sft_data, "sft-medqa-t", "sft.optim.max_steps=6",
             "sft.optim.logging_steps=2", "scaling.num_workers=1")
    )  # fmt: skip
    assert s["steps"] == 6 and s["loss_last"] < s["loss_first"]
    assert s["eval"]["n"] == 12
    assert s["training_mode"] == "LoRA"  # QLoRA asked for, no GPU: plain LoRA
    assert 0.0 <= s["eval"]["accuracy"] <= 1.0


def test_a_dataset_without_rows_for_the_task_is_refused_before_training(ray_cluster, tmp_path):
    data = write_sft_data(tmp_path / "d", n_train=4, n_test=2)
    cfg = _cfg("sft_medqa_tiny", data, "sft-empty", "data.limit_train=0")
    # A preprocessed output holding only VQA rows has nothing for the medical-QA task.
    import pyarrow.parquet as pq

    for split in ("train", "test"):
        f = data / split / "part-0.parquet"
        t = pq.read_table(f)
        pq.write_table(t.filter(_mask(t, "vqa")), f)
    with pytest.raises(SFTInputError, match="no usable rows for task 'medqa'"):
        run(cfg)


def _mask(table, task: str):
    import pyarrow.compute as pc

    return pc.equal(table.column("task"), task)
