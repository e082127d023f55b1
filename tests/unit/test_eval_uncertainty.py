"""Bootstrap intervals and paired differences (medray/eval/uncertainty.py), checked against
hand-computed figures and the normal approximation, and end to end in the evaluate job."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
from eval_fixtures import DATASET, VQA_ROWS, write_run

from jobs.evaluate import EvaluateConfig, ExpectedSettings, main
from medray.eval.metrics import score_rows
from medray.eval.uncertainty import interval, paired, paired_difference, row_scores

pytestmark = pytest.mark.unit


def test_interval_of_a_proportion_matches_the_normal_approximation():
    x = [1.0] * 120 + [0.0] * 280  # p = 0.3, n = 400
    iv = interval(x)
    half = 1.96 * math.sqrt(0.3 * 0.7 / 400)  # 0.0449
    assert iv["n"] == 400 and iv["mean"] == pytest.approx(0.3)
    assert iv["low"] == pytest.approx(0.3 - half, abs=0.006)
    assert iv["high"] == pytest.approx(0.3 + half, abs=0.006)
    assert interval(x) == iv  # seeded: one input, one interval


def test_degenerate_samples():
    assert interval([]) is None
    assert interval([1.0, 1.0, 1.0]) == {
        "n": 3,
        "mean": 1.0,
        "low": 1.0,
        "high": 1.0,
        "level": 0.95,
    }
    assert interval([0.0])["low"] == interval([0.0])["high"] == 0.0
    same = {f"r{i}": float(i % 2) for i in range(20)}
    d = paired_difference(same, same)
    assert d["delta"] == d["low"] == d["high"] == 0.0 and d["b_ahead_share"] == 0.0
    assert paired_difference({"a": 1.0}, {"b": 1.0}) is None  # no shared row


def test_paired_difference_is_narrower_than_two_independent_intervals():
    """B fixes 10 of A's 60 wrong answers out of 100 and breaks none: the paired interval
    lies above 0, while the two runs' own intervals overlap."""
    a = {f"r{i:03d}": float(i < 40) for i in range(100)}
    b = {k: 1.0 if (v or int(k[1:]) < 50) else 0.0 for k, v in a.items()}
    d = paired_difference(a, b)
    assert d["n"] == 100 and d["a"] == 0.4 and d["b"] == 0.5
    assert d["delta"] == pytest.approx(0.1)
    assert 0.0 < d["low"] < 0.1 < d["high"] < 0.2
    assert d["b_ahead_share"] > 0.99
    ia, ib = interval(list(a.values())), interval(list(b.values()))
    assert ib["low"] < ia["high"]  # unpaired, the runs are not told apart
    # An unpaired difference's interval is about hypot(width A, width B) wide (0.25 here).
    unpaired = math.hypot(ia["high"] - ia["low"], ib["high"] - ib["low"])
    assert d["high"] - d["low"] < 0.6 * unpaired


def test_paired_uses_only_the_rows_both_runs_scored():
    a = {"x": 1.0, "y": 0.0, "z": 0.0}
    b = {"y": 1.0, "z": 1.0, "w": 0.0}
    d = paired_difference(a, b)
    assert d["n"] == 2 and d["a"] == 0.0 and d["b"] == 1.0 and d["delta"] == 1.0


def test_row_scores_per_metric():
    rows = score_rows(
        [
            {"sample_id": "c1", "task": "vqa", "answer_type": "closed", "answer": "yes",
             "pred_answer": "yes", "parse_ok": True, "blank_answer": "no", "error": ""},
            {"sample_id": "o1", "task": "vqa", "answer_type": "open", "answer": "liver",
             "pred_answer": "lung", "parse_ok": False, "error": ""},
            {"sample_id": "m1", "task": "mcq", "answer_type": "choice", "answer": "B",
             "pred_answer": "B", "choices": ["x", "y"], "error": ""},
            {"sample_id": "r1", "task": "report", "error": ""},
        ]
    )  # fmt: skip
    s = row_scores(rows)
    assert s["accuracy"] == {"c1": 1.0, "o1": 0.0}
    assert s["closed accuracy"] == {"c1": 1.0} and s["open accuracy"] == {"o1": 0.0}
    assert s["JSON validity"] == {"c1": 1.0, "o1": 0.0}
    assert s["blank-image accuracy"] == {"c1": 0.0}
    assert s["MCQ accuracy"] == {"m1": 1.0}


def _better(rows):
    rows = [dict(r) for r in rows]
    for r in rows:
        if r["sample_id"] in ("q04", "q05"):
            r["pred_answer"] = r["answer"]
    return rows


def test_the_evaluate_job_reports_intervals_and_paired_differences(tmp_path):
    base = write_run(tmp_path / "base", VQA_ROWS, "base")
    sft = write_run(tmp_path / "sft", _better(VQA_ROWS), "sft", adapter="/ad/sft")
    out = tmp_path / "eval"
    main(
        EvaluateConfig(
            predictions=(str(base), str(sft)),
            expected=ExpectedSettings(dataset=DATASET, split="test"),
            output=str(out),
        )
    )
    rep = json.loads((out / "report.json").read_text())
    acc = [r["metrics"]["intervals"]["accuracy"] for r in rep["runs"]]
    assert [a["mean"] for a in acc] == pytest.approx([0.4, 0.6]) and acc[0]["n"] == 10
    assert all(a["low"] <= a["mean"] <= a["high"] for a in acc)
    (p,) = rep["paired"]
    assert (p["a"], p["b"]) == ("base", "sft")
    assert p["metrics"]["accuracy"]["delta"] == pytest.approx(0.2)
    # The same per-row scores are in rows.parquet, so `medray report compare` can pair runs.
    rows = pq.read_table(out / "rows.parquet").to_pylist()
    runs = [[r for r in rows if r["run"] == label] for label in ("base", "sft")]
    again = paired(["base", "sft"], runs)
    assert again[0]["metrics"]["accuracy"] == p["metrics"]["accuracy"]
    md = (out / "report.md").read_text()
    assert "## How sure: 95% bootstrap intervals" in md and "**sft** - **base**" in md
    assert np.isclose(p["metrics"]["accuracy"]["b"] - p["metrics"]["accuracy"]["a"], 0.2)

    # `medray report compare` pairs the two runs through the report's rows.parquet.
    from click.testing import CliRunner

    from medray.cli.main import cli

    res = CliRunner().invoke(
        cli, ["report", "compare", str(out), str(out), "--a-label", "base", "--b-label", "sft",
              "--out", str(tmp_path / "cmp")]
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "Paired bootstrap over the rows both runs scored" in res.output
    cmp = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert cmp["paired"]["accuracy"] == p["metrics"]["accuracy"]
    line = next(x for x in res.output.splitlines() if x.startswith("accuracy ") and "[" in x)
    assert "+0.200 [" in line
