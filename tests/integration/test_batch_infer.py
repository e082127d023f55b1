"""Batch inference on the shared 3-node test cluster: two models (base + LoRA adapter) in
one run, a corrupt image row reported (not dropped), actors on several nodes, the
evaluation report, and predictions for another split or model refused by evaluate."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infer_fixtures import corrupt_png, make_adapter, vqa_row, write_output

pytestmark = pytest.mark.integration


def _cfg(data: str, out: Path, split: str, models: list[dict], evaluate: bool):
    from jobs.batch_infer import BatchInferConfig
    from medray.config import from_dict

    return from_dict(
        BatchInferConfig,
        {
            "name": "bi-test",
            "output": str(out),
            "input": {"path": data, "split": split},
            "models": models,
            "actors": {"concurrency": 3, "batch_size": 2, "num_cpus": 0.5},
            "generation": {"max_new_tokens": 8},
            "counterfactual": {"enabled": True, "blank_control": True},
            "evaluate": {"enabled": evaluate},
        },
    )


def test_two_models_on_every_node_with_a_corrupt_row(ray_cluster, tmp_path, medray_home):
    from jobs.batch_infer import run
    from jobs.evaluate import EvaluateConfig, ExpectedSettings
    from jobs.evaluate import main as evaluate
    from medray.eval.predictions import PredictionMismatchError, read_predictions
    from medray.models import ensure_built

    rows = [vqa_row(i) for i in range(9)]
    rows[4] = vqa_row(4, image=corrupt_png())
    rows += [vqa_row(20 + i, split="validation") for i in range(3)]
    data = write_output(tmp_path / "data", rows)
    adapter = make_adapter(str(ensure_built("tiny-qwen2-vl")), tmp_path / "lora")
    models = [{"label": "base"}, {"label": "sft", "adapter": adapter}]

    s = run(_cfg(data, tmp_path / "run", "test", models, evaluate=True))

    assert s["input_rows"] == 9 and s["prediction_rows"] == 18
    for label in ("base", "sft"):
        p = read_predictions(s["predictions"][label])  # checks the whole contract
        assert p.table.num_rows == 9 and p.manifest.model_label == label
        by_id = {r["sample_id"]: r for r in p.rows()}
        bad = by_id["t:004"]
        assert bad["error"].startswith("image: ") and bad["pred_answer"] is None
        assert all(r["error"] == "" for k, r in by_id.items() if k != "t:004")
        assert s["models"][label]["errors"] == 1
    assert read_predictions(s["predictions"]["sft"]).manifest.adapter == adapter
    # The pool starts every actor before it hands out rows (3 actors of 0.5 CPU on 1-CPU
    # nodes: at least 2 nodes), and each gets a batch (5 batches, one in flight per actor).
    nodes, actors = s["rows_per_node"], s["actors_per_node"]
    assert sum(nodes.values()) == 18
    assert sum(actors.values()) == 3, actors
    assert len(actors) >= 2 and set(actors) == set(nodes), (actors, nodes)
    report = Path(s["report"])
    assert report.is_file() and "unreadable" in report.read_text().lower()
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["report"] == s["report"]

    # Predictions of another split, and of another model, are refused with a clear message
    # (the test split's predictions, expected for the validation split).
    with pytest.raises(
        PredictionMismatchError, match="split 'test', not the expected 'validation'"
    ):
        evaluate(
            EvaluateConfig(
                predictions=(s["predictions"]["base"],),
                expected=ExpectedSettings(dataset=data, split="validation"),
                output=str(tmp_path / "ev1"),
            )
        )
    with pytest.raises(PredictionMismatchError, match="not the expected 'base'"):
        evaluate(
            EvaluateConfig(
                predictions=(s["predictions"]["sft"],),
                expected=ExpectedSettings(dataset=data, split="test", models=("base",)),
                output=str(tmp_path / "ev2"),
            )
        )
    assert not (tmp_path / "ev1").exists() and not (tmp_path / "ev2").exists()
