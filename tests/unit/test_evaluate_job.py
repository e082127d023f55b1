"""jobs/evaluate.py end to end on fixture predictions (no Ray needed), and its refusals."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest
from eval_fixtures import DATASET, VQA_ROWS, row, write_run

from jobs.evaluate import EvaluateConfig, ExpectedSettings, main
from medray.config import ConfigError, load_config
from medray.eval.predictions import PredictionMismatchError, read_predictions

pytestmark = pytest.mark.unit
REPO = __import__("pathlib").Path(__file__).resolve().parents[2]


def _cfg(paths, out, **kw):
    expected = kw.pop("expected", ExpectedSettings(dataset=DATASET, split="test"))
    return EvaluateConfig(predictions=tuple(str(p) for p in paths), expected=expected,
                          output=str(out), **kw)  # fmt: skip


def _better(rows):
    rows = [dict(r) for r in rows]
    for r in rows:
        if r["sample_id"] in ("q04", "q05"):
            r["pred_answer"], r["confidence"] = r["answer"], 0.95
    return rows


def test_evaluate_three_runs_with_vote(tmp_path, capsys):
    base = write_run(tmp_path / "base", VQA_ROWS, "base")
    sft = write_run(tmp_path / "sft", _better(VQA_ROWS), "sft", adapter="/ad/sft")
    grpo = write_run(tmp_path / "grpo", _better(VQA_ROWS), "grpo", adapter="/ad/grpo")
    out = tmp_path / "eval"
    summary = main(_cfg([base, sft, grpo], out, aggregate=True,
                        expected=ExpectedSettings(dataset=DATASET, split="test", models=("base", "sft", "/ad/grpo"))))  # fmt: skip

    printed = capsys.readouterr().out
    assert "=== MedRay evaluation ===" in printed and f"REPORT: {out / 'report.md'}" in printed
    assert list(summary["runs"]) == ["base", "sft", "grpo", "vote"]
    assert summary["runs"]["base"]["accuracy"] == pytest.approx(0.4)
    assert summary["runs"]["sft"]["accuracy"] == pytest.approx(0.6)
    assert summary["runs"]["base"]["unreadable rows"] == 1
    for name in ("report.md", "report.json", "summary.json", "rows.parquet", "risk_coverage.png",
                 "accuracy_by_type.png", "confusion_closed.png", "latency.png"):  # fmt: skip
        assert (out / name).is_file(), name
    # the vote is a valid predictions folder under the contract, on the same rows
    vote = read_predictions(out / "vote_predictions")
    assert vote.manifest.model_label == "vote" and vote.table.num_rows == 10
    # every row is scored, the unreadable one included, for every run
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    assert len(rows) == 40
    q07 = [r for r in rows if r["sample_id"] == "q07"]
    assert all(r["correct"] is False and r["failures"] == ["unreadable_image"] for r in q07)
    rep = json.loads((out / "report.json").read_text())
    assert rep["aggregate"]["runs"] == ["base", "sft", "grpo"] and rep["n_rows"] == 10


def test_mcq_text_and_retrieval_rows_end_to_end(tmp_path):
    import sacrebleu

    from medray.eval.retrieval import retrieval_metrics

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(4, 8))
    mcq = [
        row(
            f"m{i}",
            task="mcq",
            answer_type="choice",
            choices=["w", "x", "y", "z"],
            answer=a,
            pred_answer=None,
            parse_ok=False,
            parsed=None,
            mcq_pred=p,
            nll=nll,
            n_tokens=n,
        )
        for i, (a, p, nll, n) in enumerate(
            [("x", "B", 1.2, 2), ("y", "(a)", 3.0, 3), ("w", "A", 0.5, 1)]
        )
    ]
    texts = [
        "small left pleural effusion with basal atelectasis",
        "the chest is normal",
        "the chest is normal",
        "the heart is enlarged without effusion",
    ]
    gens = [
        "small left pleural effusion and atelectasis",
        "the chest is normal",
        None,
        "the heart is enlarged",
    ]
    rep = [row(f"r{i}", task="report", answer=None, answer_type=None, pred_answer=None,
               reference_text=t, generated_text=g, image_embedding=(emb[i] + 0.1).tolist(),
               text_embedding=emb[i if i != 2 else 1].tolist())
           for i, (t, g) in enumerate(zip(texts, gens, strict=True))]  # fmt: skip
    folder = write_run(tmp_path / "p", mcq + rep)
    summary = main(_cfg([folder], tmp_path / "eval"))
    metrics = json.loads((tmp_path / "eval" / "report.json").read_text())["runs"][0]["metrics"]
    assert metrics["mcq"]["accuracy"] == pytest.approx(
        2 / 3
    )  # m0 B=x right, m1 a=w wrong, m2 right
    assert metrics["mcq"]["perplexity"] == pytest.approx(np.exp((1.2 + 3.0 + 0.5) / 6))
    assert metrics["text"]["bleu"] > 10 and metrics["text"]["bleu"] == pytest.approx(
        sacrebleu.corpus_bleu([g or "" for g in gens], [texts]).score
    )
    img = np.array([r["image_embedding"] for r in rep])
    txt = np.array([r["text_embedding"] for r in rep])
    ref = retrieval_metrics(img / np.linalg.norm(img, axis=1, keepdims=True),
                            txt / np.linalg.norm(txt, axis=1, keepdims=True), texts, (1, 5, 10))  # fmt: skip
    assert metrics["retrieval"]["embedding"] == pytest.approx(ref)
    assert metrics["structure"] is None  # JSON validity and boxes are about VQA answers
    counts = {k: v["count"] for k, v in metrics["errors"]["kinds"].items()}
    assert counts == {"wrong_answer": 1, "empty_answer": 1}  # m1's answer, r2's missing text
    assert metrics["errors"]["kinds"]["empty_answer"]["examples"] == ["r2"]
    assert summary["runs"]["base"]["MCQ accuracy"] == pytest.approx(2 / 3)


def test_refuses_predictions_for_other_data_or_models(tmp_path):
    good = write_run(tmp_path / "good", VQA_ROWS, "base")
    val = write_run(tmp_path / "val", [dict(r, split="validation") for r in VQA_ROWS], "base",
                    split="validation")  # fmt: skip
    with pytest.raises(
        PredictionMismatchError, match="split 'validation', not the expected 'test'"
    ):
        main(_cfg([good, val], tmp_path / "e1"))
    with pytest.raises(PredictionMismatchError, match="not the expected 'sft'"):
        main(
            _cfg(
                [good],
                tmp_path / "e2",
                expected=ExpectedSettings(dataset=DATASET, split="test", models=("sft",)),
            )
        )
    with pytest.raises(PredictionMismatchError, match="not the expected '/data/other'"):
        main(
            _cfg(
                [good],
                tmp_path / "e3",
                expected=ExpectedSettings(dataset="/data/other", split="test"),
            )
        )
    fewer = write_run(tmp_path / "fewer", VQA_ROWS[:5], "sft")
    with pytest.raises(PredictionMismatchError, match="made on different input rows"):
        main(_cfg([good, fewer], tmp_path / "e4"))
    fp = read_predictions(good).manifest.dataset_fingerprint
    with pytest.raises(PredictionMismatchError, match="other input rows"):
        main(
            _cfg(
                [fewer],
                tmp_path / "e5",
                expected=ExpectedSettings(dataset=DATASET, split="test", fingerprint=fp),
            )
        )
    for i in range(1, 6):
        assert not (tmp_path / f"e{i}").exists()  # refused before anything is written


def test_config_errors_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="name at least one predictions folder"):
        EvaluateConfig(expected=ExpectedSettings(dataset="/d"))
    with pytest.raises(ConfigError, match="expected.dataset and expected.split must be set"):
        EvaluateConfig(predictions=("/p",))
    with pytest.raises(ConfigError, match="give one per folder"):
        EvaluateConfig(
            predictions=("/p", "/q"), expected=ExpectedSettings(dataset="/d", models=("a",))
        )
    with pytest.raises(ConfigError, match="aggregate: true needs at least two"):
        EvaluateConfig(predictions=("/p",), expected=ExpectedSettings(dataset="/d"), aggregate=True)
    cfg = load_config(
        EvaluateConfig, REPO / "jobs/configs/evaluate_tiny.yaml", ["metrics.thresholds=[0.5]"]
    )
    assert cfg.metrics.thresholds == (0.5,) and cfg.aggregate


def test_command_line_run(tmp_path):
    """The job's own entry point: --config plus overrides, as the YAML's first line runs it."""
    base = write_run(tmp_path / "base", VQA_ROWS, "base")
    out = tmp_path / "eval"
    cmd = [sys.executable, "-m", "jobs.evaluate", "--config", "jobs/configs/evaluate_tiny.yaml",
           f"predictions=[{base}]", f"expected.dataset={DATASET}", f"output={out}", "aggregate=false"]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert f"REPORT: {out / 'report.md'}" in res.stdout
    bad = subprocess.run(
        [*cmd[:-1], "aggregate=maybe"], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "aggregate: expected true or false" in bad.stderr


def test_config_for_a_batch_inference_run_checks_every_folder_against_it(tmp_path):
    from jobs.evaluate import config_for

    cfg = config_for(
        {"base": "/p/base", "sft": "/p/sft"},
        dataset=DATASET,
        split="test",
        fingerprint="sha256:abc",
        output=str(tmp_path),
        aggregate=True,
    )
    assert cfg.predictions == ("/p/base", "/p/sft")
    assert cfg.expected == ExpectedSettings(
        dataset=DATASET, split="test", models=("base", "sft"), fingerprint="sha256:abc"
    )
    assert cfg.aggregate and cfg.output == str(tmp_path)
    with pytest.raises(ConfigError, match="aggregate: true needs at least two"):
        config_for({"base": "/p/base"}, dataset=DATASET, split="test", fingerprint="",
                   output="", aggregate=True)  # fmt: skip
