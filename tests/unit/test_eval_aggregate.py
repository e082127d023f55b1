"""Confidence-weighted majority vote: hand fixtures, ties, refusals, a valid output table."""

from __future__ import annotations

import pytest
from eval_fixtures import row, write_run

from medray.eval.aggregate import aggregate, vote_key, weighted_vote
from medray.eval.predictions import PredictionMismatchError, read_predictions

pytestmark = pytest.mark.unit


def test_weighted_vote_hand_computed():
    # count majority says "no" (2 votes), weight says "yes" (0.9 > 0.3 + 0.3)
    assert weighted_vote([("yes", 0.9), ("no", 0.3), ("no", 0.3)]) == ("yes", pytest.approx(0.6), 1)
    # equal weight: more votes win
    assert weighted_vote([("a", 0.5), ("b", 0.25), ("b", 0.25)])[0] == "b"
    # equal weight and votes: the run listed first wins, whatever the key sorts as
    assert weighted_vote([("z", 0.5), ("a", 0.5)])[0] == "z"
    assert weighted_vote([("a", 0.5), ("z", 0.5)])[0] == "a"
    # all weights 0: plain majority, share of votes
    assert weighted_vote([("x", 0.0), ("y", 0.0), ("y", 0.0)]) == ("y", pytest.approx(2 / 3), 2)
    assert weighted_vote([]) is None


def test_vote_keys_follow_the_protocol():
    assert (
        vote_key(row("a", pred_answer="Yes, there is."))
        == vote_key(row("a", pred_answer="yes"))
        == "yn:yes"
    )
    choice = {"answer_type": "choice", "choices": ["Left", "Right"]}
    assert vote_key(row("a", pred_answer="B", **choice)) == vote_key(
        row("a", pred_answer="right", **choice)
    )
    assert vote_key(row("a", answer_type="open", pred_answer="The Heart")) == "text:heart"
    assert vote_key(row("a", pred_answer=None)) is None


def _three_runs(tmp_path):
    a = [row("s1", pred_answer="yes", confidence=0.9), row("s2", answer="no", pred_answer="no", confidence=0.2),
         row("s3", pred_answer=None, parse_ok=False, parsed=None, confidence=None, error="image: corrupt",
             latency_ms=0.0),
         row("s4", answer="left", answer_type="open", pred_answer="Left", confidence=None)]  # fmt: skip
    b = [row("s1", pred_answer="no", confidence=0.4, latency_ms=50.0),
         row("s2", answer="no", pred_answer="yes", confidence=0.3),
         row("s3", pred_answer=None, parse_ok=False, parsed=None, confidence=None, error="image: corrupt",
             latency_ms=0.0),
         row("s4", answer="left", answer_type="open", pred_answer="right", confidence=None)]  # fmt: skip
    c = [row("s1", pred_answer="No.", confidence=0.4, latency_ms=70.0),
         row("s2", answer="no", pred_answer="No, none", confidence=0.25),
         row("s3", pred_answer=None, parse_ok=False, parsed=None, confidence=None, error="image: corrupt",
             latency_ms=0.0),
         row("s4", answer="left", answer_type="open", pred_answer="right", confidence=None)]  # fmt: skip
    return [read_predictions(write_run(tmp_path / n, rows, label=n)) for n, rows in
            (("base", a), ("sft", b), ("grpo", c))]  # fmt: skip


def test_aggregate_hand_computed(tmp_path):
    runs = _three_runs(tmp_path)
    table, summary = aggregate(runs)
    out = {r["sample_id"]: r for r in table.to_pylist()}
    # s1: yes 0.9 vs no 0.4+0.4=0.8 -> yes, share 0.9/1.7, the base row
    assert out["s1"]["pred_answer"] == "yes" and out["s1"]["confidence"] == pytest.approx(0.9 / 1.7)
    assert out["s1"]["latency_ms"] == pytest.approx(100 + 50 + 70)  # the ensemble's cost
    # s2: no 0.2+0.25=0.45 vs yes 0.3 -> no; the most confident "no" row is grpo's
    assert out["s2"]["pred_answer"] == "No, none" and out["s2"]["confidence"] == pytest.approx(
        0.45 / 0.75
    )
    # s3: nobody answered: kept with its error, never dropped
    assert out["s3"]["error"] == "image: corrupt" and out["s3"]["pred_answer"] is None
    # s4: no confidences -> majority of votes "right" (2 of 3)
    assert out["s4"]["pred_answer"] == "right" and out["s4"]["confidence"] == pytest.approx(2 / 3)
    assert summary == {"runs": ["base", "sft", "grpo"], "n": 4, "unanimous_rate": 0.0, "no_vote": 1}
    assert [r["sample_id"] for r in table.to_pylist()] == ["s1", "s2", "s3", "s4"]


def test_aggregate_is_independent_of_row_order(tmp_path):
    runs = _three_runs(tmp_path)
    from medray.eval.predictions import Predictions

    shuffled = [Predictions(r.path, r.manifest, r.table.take([3, 1, 0, 2])) for r in runs]
    a = {r["sample_id"]: r["pred_answer"] for r in aggregate(runs)[0].to_pylist()}
    b = {r["sample_id"]: r["pred_answer"] for r in aggregate(shuffled)[0].to_pylist()}
    assert a == b


def test_aggregate_refuses_runs_on_other_rows(tmp_path):
    runs = _three_runs(tmp_path)
    other = read_predictions(write_run(tmp_path / "other", [row("s1"), row("s9")], label="other"))
    with pytest.raises(PredictionMismatchError, match="different input rows"):
        aggregate([runs[0], other])
    with pytest.raises(PredictionMismatchError, match="at least two"):
        aggregate(runs[:1])
