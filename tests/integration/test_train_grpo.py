"""GRPO job on Ray Train + DeepSpeed: 2 workers under ZeRO-3 with a worker killed mid-run,
then the SFT-vs-GRPO evaluation and a compare-only run; bad input fails before any worker."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from vqa_boxes import write_vqa_boxes
from worker_kill import alive_train_workers, submit_and_kill_a_worker

from medray.config import load_config

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "jobs" / "configs" / "grpo_tiny.yaml"


def _cfg(*overrides):
    from jobs.train_grpo import TrainGRPOConfig

    return load_config(TrainGRPOConfig, CONFIG, list(overrides))


def test_bad_input_fails_before_any_worker_starts(ray_cluster, tmp_path):
    from jobs.train_grpo import GRPOInputError, build_dataset, check_model, trained_policy
    from medray.config import ConfigError
    from medray.models import UnknownPresetError

    with pytest.raises(UnknownPresetError, match="no-such-model"):
        check_model(_cfg("grpo.model=no-such-model"))
    with pytest.raises(FileNotFoundError, match="grpo.init"):
        check_model(_cfg(f"grpo.init={tmp_path / 'missing'}"))
    with pytest.raises(FileNotFoundError, match="eval.compare_with"):
        trained_policy(_cfg(), str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="eval.compare_with needs eval.enabled"):
        _cfg(f"eval.compare_with={tmp_path}", "eval.enabled=false")

    data = tmp_path / "vqa"
    write_vqa_boxes(data, {"train": 8, "test": 4})
    with pytest.raises(GRPOInputError, match="split 'heldout'"):
        build_dataset(_cfg(f"data.input={data}", "data.eval_split=heldout"))
    with pytest.raises(GRPOInputError, match="split 'validation'"):  # no such files
        build_dataset(_cfg(f"data.input={data}", "data.eval_split=validation"))
    with pytest.raises(GRPOInputError, match="no \\['mcq'\\] rows"):  # an empty dataset
        build_dataset(_cfg(f"data.input={data}", "data.tasks=[mcq]"))
    with pytest.raises(GRPOInputError, match="nothing"):
        build_dataset(_cfg(f"data.input={tmp_path / 'nothing'}"))

    unboxed = tmp_path / "unboxed"
    write_vqa_boxes(unboxed, {"train": 8, "test": 4}, boxes=False)
    with pytest.raises(GRPOInputError, match="reference boxes"):
        build_dataset(_cfg(f"data.input={unboxed}"))
    # Without the counterfactual reward, boxes are not needed.
    train, eval_rows, counts = build_dataset(
        _cfg(f"data.input={unboxed}", "grpo.rewards.counterfactual=0")
    )
    assert train.count() == 8 and len(eval_rows) == 4 and counts["rows_with_boxes"]["train"] == 0
    assert not alive_train_workers()


def _job_args() -> list[str]:
    return ["python", "-m", "jobs.train_grpo", "--config", str(CONFIG.relative_to(REPO))]


def test_zero3_two_workers_survive_a_killed_worker_then_compare_on_held_out(
    ray_cluster, tmp_path, medray_home, capsys
):
    """One GRPO run for what were two (ZeRO-2 training + evaluation, and ZeRO-3 with a killed
    worker): ZeRO-3 (weights gathered for generation and for the counterfactual reward's
    re-answer) is the harder stage; ZeRO-2 is the stage of the SFT and CLIP runs."""
    data = tmp_path / "vqa"
    write_vqa_boxes(data, {"train": 16, "test": 4})
    run = "grpo-zero3-kill-test"
    run_dir = medray_home / "runs" / run
    rc, out = submit_and_kill_a_worker(
        [
            *_job_args(),
            f"data.input={data}", f"run.name={run}", "grpo.deepspeed.zero_stage=3",
            "run.max_failures=2", "grpo.optim.max_steps=6", "grpo.optim.save_steps=1",
            "grpo.max_completion_length=24", "grpo.reanswer_max_new_tokens=24",
            "eval.max_rows=4", "eval.samples=2", "eval.max_new_tokens=24",
        ],
        run_dir,
        max_reports=3,
    )  # fmt: skip
    assert rc == 0, out[-5000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] >= 1, "training did not resume from a checkpoint"
    assert summary["steps"] == 6
    assert len({w["rank"] for w in summary["workers"]}) == 2
    assert len({w["train_order"] for w in summary["workers"]}) == 1  # one row order
    hist = summary["history"]
    assert hist and all(math.isfinite(h["reward"]) for h in hist)
    # Every reward component is logged by trl (``rewards/<name>/mean``) and finite. The
    # counterfactual reward is undefined (None) for a completion without a readable answer,
    # so it may be missing only from steps where no completion parsed (format 0).
    for h in hist:
        for k in ("format", "answer", "consistency"):
            assert h[k] is not None and math.isfinite(h[k]), (k, h)
        assert h["counterfactual"] is not None or h["format"] == 0.0, h
    ev = summary["eval"]
    for name in ("sft", "grpo"):
        m = ev[name]
        assert m["n"] == 4
        assert 0.0 <= m["reward"] <= 1.0 and 0.0 <= m["json_validity"] <= 1.0
        assert m["closed_accuracy"] is not None and m["blank_control"]["n"] == 4
        drawn = m["sampled"]  # 2 answers per row at the GRPO temperature
        assert drawn["n"] == 8 and drawn["samples_per_row"] == 2 and drawn["temperature"] == 1.0
        assert 0.0 <= drawn["reward"] <= 1.0 and 0.0 <= drawn["json_validity"] <= 1.0
    final = Path(summary["final_model"])
    assert (final / "adapter_config.json").is_file()  # LoRA adapter, loadable with peft

    from peft import PeftModel

    from medray.models.loading import load_vlm

    base, _ = load_vlm("tiny-qwen2-vl")
    merged = PeftModel.from_pretrained(base, str(final)).merge_and_unload()
    assert sum(p.numel() for p in merged.parameters()) > 0

    # No training: the start policy against the finished model, on other rows. In this
    # process (the job's `run`, on the cluster the test is connected to): a second `job
    # submit` cost its upload, driver start and imports again.
    from jobs.train_grpo import run as run_grpo

    compared = run_grpo(
        _cfg(f"data.input={data}", f"run.name={run}", f"eval.compare_with={final}",
             "eval.max_rows=2", "eval.max_new_tokens=24", "grpo.reanswer_max_new_tokens=24")
    )  # fmt: skip
    assert "no training (eval.compare_with)" in capsys.readouterr().out
    written = json.loads((run_dir / "compare.json").read_text())
    assert written["final_model"] == compared["final_model"] == str(final)
    assert "steps" not in written and written["eval"]["grpo"]["n"] == 2
    assert compared["eval"]["sft"]["n"] == 2 and compared["eval"]["grpo"]["n"] == 2
    # The training summary is left as it was.
    assert json.loads((run_dir / "summary.json").read_text()) == summary
