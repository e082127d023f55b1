"""jobs/train_sft.py refuses bad input before any worker starts; task formats and metrics."""

from __future__ import annotations

import json

import pytest

from jobs.train_sft import SFTDataSettings, SFTInputError, TrainSFTConfig, build_dataset, run
from medray.config import load_config
from medray.contracts import medqa, summariser
from medray.data.output import FORMAT
from medray.data.schema import SCHEMA_VERSION
from medray.train.sft_eval import score_medqa, score_reasoner
from medray.train.sft_recipe import SFTRecipeSettings
from medray.train.sft_tasks import training_row, usable

pytestmark = pytest.mark.unit


def test_unknown_model_preset_is_refused_before_ray_starts(monkeypatch):
    import medray.runtime

    monkeypatch.setattr(medray.runtime, "init_ray", lambda: pytest.fail("Ray was started"))
    cfg = TrainSFTConfig(sft=SFTRecipeSettings(model="no-such-model"))
    with pytest.raises(SFTInputError, match="unknown model preset 'no-such-model'"):
        run(cfg)


def test_a_text_preset_for_the_reasoner_is_refused(monkeypatch):
    import medray.runtime

    monkeypatch.setattr(medray.runtime, "init_ray", lambda: pytest.fail("Ray was started"))
    with pytest.raises(SFTInputError, match="is a lm model, expected a vlm model"):
        run(TrainSFTConfig(sft=SFTRecipeSettings(model="tiny-lm")))


def test_missing_input_and_missing_split_are_refused(tmp_path):
    with pytest.raises(SFTInputError, match="data.input is empty"):
        build_dataset(TrainSFTConfig(), "train", 0)
    out = tmp_path / "prep"
    (out / "train").mkdir(parents=True)
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "data_dir": "",
        "files": {"train": ["train/part-0.parquet"]},
    }
    (out / "_SUCCESS").write_text(json.dumps(manifest))
    cfg = TrainSFTConfig(data=SFTDataSettings(input=str(out)))
    with pytest.raises(SFTInputError, match="split 'test'"):
        build_dataset(cfg, "test", 0)
    with pytest.raises(SFTInputError, match="split 'holdout'"):
        build_dataset(cfg, "holdout", 0)


def test_shipped_configs_load():
    for name in (
        "sft_reasoner_tiny",
        "sft_reasoner_synth",
        "sft_summariser_tiny",
        "sft_medqa_tiny",
    ):
        cfg = load_config(TrainSFTConfig, f"jobs/configs/{name}.yaml")
        assert cfg.sft.model


REPORT = {
    "task": "report",
    "findings": "Small left effusion.  Heart normal.",
    "impression": "Left pleural effusion.",
}
MCQ = {
    "task": "mcq",
    "question": "Which vitamin?",
    "choices": ["A1", "B12", "C"],
    "answer": "B12",
    "rationale": "Because  cobalamin.",
}


def test_text_task_formats():
    assert usable("summariser", REPORT) and not usable("summariser", MCQ)
    assert summariser.prompt(summariser.steps_from_findings(REPORT["findings"])) == (
        "Reasoning steps:\n1. Small left effusion.\n2. Heart normal.\nDiagnosis summary:"
    )
    assert training_row("summariser", REPORT)["completion"] == " Left pleural effusion."
    assert medqa.target(MCQ) == " B. B12\nExplanation: Because cobalamin."
    assert training_row("medqa", MCQ)["prompt"].endswith("C. C\nAnswer:")
    assert medqa.parse_letter(" B. B12\nExplanation") == "B"
    assert medqa.parse_letter("no idea") is None


def test_scores_use_the_project_parser_and_metrics():
    rows = [
        {"raw_text": '{"caption": "c", "reasoning": ["r"], "boxes": [[0.1, 0.1, 0.5, 0.5]], '
         '"answer": "Yes"}', "answer": "yes", "answer_type": "closed", "boxes": []},
        {"raw_text": "not json", "answer": "no", "answer_type": "closed", "boxes": []},
        {"raw_text": '{"caption": "c", "reasoning": ["r"], "boxes": [], "answer": "CT"}',
         "answer": "MRI", "answer_type": "open", "boxes": []},
    ]  # fmt: skip
    s = score_reasoner(rows)
    assert s["closed_accuracy"] == 0.5 and s["open_accuracy"] == 0.0
    assert s["json_validity"] == pytest.approx(2 / 3) and s["box_rate"] == pytest.approx(1 / 3)
    assert s["closed_majority_rate"] == 0.5
    q = score_medqa([dict(MCQ, raw_text=" B. B12"), dict(MCQ, raw_text=" A. A1")])
    assert q["accuracy"] == 0.5 and q["answered_rate"] == 1.0 and q["majority_rate"] == 1.0


def test_vision_collator_puts_the_loss_on_the_answer_only():
    import io

    from PIL import Image

    from medray.models import resolve
    from medray.train.sft_recipe import VisionSFTCollator, load_processor

    buf = io.BytesIO()
    Image.new("RGB", (112, 112), (200, 10, 10)).save(buf, "PNG")
    row = {"sample_id": "x", "image": buf.getvalue(), "question": "Is there X?", "answer": "No",
           "answer_type": "closed", "task": "vqa"}  # fmt: skip
    proc = load_processor(resolve("tiny-qwen2-vl", "vlm"), SFTRecipeSettings())
    ex = training_row("reasoner", row)
    batch = VisionSFTCollator(proc)([ex, dict(ex, completion=ex["completion"] * 2)])
    labels = batch["labels"]
    assert labels.shape == batch["input_ids"].shape and batch["pixel_values"].shape[0] > 0
    learned = proc.tokenizer.decode(batch["input_ids"][0][labels[0] != -100])
    assert learned.startswith(ex["completion"]) and "<|im_end|>" in learned
    assert "Is there X?" not in learned  # the prompt (and the image tokens) carry no loss
    assert (labels[0] != -100).sum() < (labels[1] != -100).sum()  # padding carries no loss
