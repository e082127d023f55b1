"""Counterfactual flip rates and the blank-image control: hand-computed fixtures."""

from __future__ import annotations

import pytest
from eval_fixtures import VQA_ROWS

from medray.eval.faithfulness import blank_control, flip_rates
from medray.eval.metrics import score_rows

pytestmark = pytest.mark.unit


def test_flip_rates_of_the_fixture():
    # q01 pred yes: ROI -> "no" (flip), random -> "yes" (same): faithful
    # q02 pred "Yes, there is ...": ROI -> "yes." (same yes), random -> "no" (flip)
    # q03 pred "no.": ROI -> "yes" (flip), random -> "no" (same): faithful
    f = flip_rates(VQA_ROWS)
    assert f["roi_flip_rate"] == pytest.approx(2 / 3)
    assert f["random_flip_rate"] == pytest.approx(1 / 3)
    assert f["flip_gap"] == pytest.approx(1 / 3)
    assert f["faithful_rate"] == pytest.approx(2 / 3)
    assert (f["n_roi"], f["n_random"], f["n_both"]) == (3, 3, 3)


def test_flip_rates_per_kind_of_region():
    def row(kind, roi, rnd):
        return {"pred_answer": "yes", "answer_type": "closed", "cf_kind": kind,
                "cf_roi_answer": roi, "cf_random_answer": rnd}  # fmt: skip

    rows = [row("named lesion", "no", "yes"), row("named lesion", "no", "no"),
            row("named organ", "yes", "yes"), row("only box", "no", "yes"),
            {"pred_answer": "no", "answer_type": "closed"}]  # fmt: skip
    f = flip_rates(rows)
    assert f["roi_flip_rate"] == 0.75 and f["random_flip_rate"] == 0.25
    k = f["by_kind"]
    assert list(k) == ["named lesion", "named organ", "only box"]
    assert k["named lesion"]["roi_flip_rate"] == 1.0 and k["named lesion"]["flip_gap"] == 0.5
    assert k["named organ"]["roi_flip_rate"] == 0.0 and k["named organ"]["n_both"] == 1
    assert k["only box"]["faithful_rate"] == 1.0
    assert flip_rates(VQA_ROWS)["by_kind"] == {}  # rows written before the kinds


def test_rows_without_answer_or_counterfactual_are_left_out():
    rows = [
        {
            "pred_answer": "left",
            "answer_type": "open",
            "cf_roi_answer": "Left.",
            "cf_random_answer": None,
        },
        {
            "pred_answer": None,
            "answer_type": "open",
            "cf_roi_answer": "right",
            "cf_random_answer": "x",
        },
        {
            "pred_answer": "ct",
            "answer_type": "open",
            "cf_roi_answer": "mri",
            "cf_random_answer": "CT",
        },
    ]
    f = flip_rates(rows)
    assert f["roi_flip_rate"] == 0.5 and f["n_roi"] == 2  # "Left." == "left"; "mri" != "ct"
    assert f["random_flip_rate"] == 0.0 and f["n_random"] == 1
    assert f["faithful_rate"] == 1.0 and f["n_both"] == 1
    assert flip_rates([{"pred_answer": "yes", "answer_type": "closed"}]) is None


def test_blank_control_of_the_fixture():
    # rows with a blank answer: q01 (ref yes, blank yes: right), q02 (ref no, blank yes:
    # wrong), q03 (ref no, blank yes: wrong); real answers: q01 right, q02 wrong, q03 right
    b = blank_control(score_rows(VQA_ROWS))
    assert b["n"] == 3
    assert b["accuracy"] == pytest.approx(2 / 3)
    assert b["blank_accuracy"] == pytest.approx(1 / 3)
    assert b["image_gain"] == pytest.approx(1 / 3)
    assert b["blank_agreement"] == pytest.approx(2 / 3)  # q01 yes=yes, q02 yes=yes, q03 yes!=no
    assert blank_control([{"correct": True}]) is None
