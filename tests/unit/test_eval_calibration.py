"""Risk-coverage, AURC, thresholds and ECE: hand fixtures, brute force and scikit-learn."""

from __future__ import annotations

import itertools
from fractions import Fraction

import numpy as np
import pytest
from eval_fixtures import VQA_ROWS

from medray.eval.calibration import (
    at_thresholds,
    aurc,
    calibration_metrics,
    expected_calibration_error,
    risk_coverage,
)
from medray.eval.metrics import score_rows

pytestmark = pytest.mark.unit


def _fixture():
    scored = score_rows(VQA_ROWS)
    return [r["confidence"] for r in scored], [r["correct"] for r in scored]


def test_curve_and_thresholds_of_the_fixture_by_hand():
    conf, correct = _fixture()
    # most confident first: .9 T, .8 F, .7 F, .6 T, .55 T, .4 T, .3 F, .2 F, then two rows
    # without confidence (unreadable, invalid) at 0, both wrong.
    c = risk_coverage(conf, correct)
    assert c["threshold"] == [0.9, 0.8, 0.7, 0.6, 0.55, 0.4, 0.3, 0.2, 0.0]
    assert c["coverage"] == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 1.0])
    assert c["accuracy"] == pytest.approx(
        [1, 1 / 2, 1 / 3, 2 / 4, 3 / 5, 4 / 6, 4 / 7, 4 / 8, 4 / 10]
    )
    t = {x["tau"]: x for x in at_thresholds(conf, correct, (0.3, 0.4, 0.5, 0.6, 0.95))}
    assert (t[0.3]["n_answered"], t[0.3]["accuracy"]) == (7, pytest.approx(4 / 7))
    assert (t[0.4]["coverage"], t[0.4]["accuracy"]) == (0.6, pytest.approx(4 / 6))
    assert (t[0.5]["coverage"], t[0.5]["accuracy"]) == (0.5, pytest.approx(3 / 5))
    assert (t[0.6]["coverage"], t[0.6]["accuracy"]) == (0.4, pytest.approx(2 / 4))
    assert t[0.95] == {
        "tau": 0.95,
        "n_answered": 0,
        "coverage": 0.0,
        "accuracy": None,
        "risk": None,
    }


def test_aurc_of_the_fixture_by_hand():
    conf, correct = _fixture()
    errors_top_k = [0, 1, 2, 2, 2, 2, 3, 4, 5, 6]
    expected = sum(Fraction(e, k) for k, e in enumerate(errors_top_k, 1)) / 10
    a = aurc(conf, correct)
    assert a["aurc"] == pytest.approx(float(expected))
    # oracle: 4 correct first, then 6 errors
    optimal = sum(Fraction(max(0, k - 4), k) for k in range(1, 11)) / 10
    assert a["aurc_optimal"] == pytest.approx(float(optimal))
    assert a["e_aurc"] == pytest.approx(float(expected - optimal))


def test_aurc_with_ties_is_the_mean_over_orderings():
    conf = [0.9, 0.5, 0.5, 0.5, 0.2, 0.2]
    correct = [True, False, True, False, True, False]
    values = []
    for perm in itertools.permutations(range(6)):
        order = sorted(perm, key=lambda i: -conf[i])  # ties in permutation order
        errs = np.cumsum([not correct[i] for i in order])
        values.append(np.mean(errs / np.arange(1, 7)))
    assert aurc(conf, correct)["aurc"] == pytest.approx(np.mean(values))
    # and it does not depend on the order of the input rows
    rng = np.random.default_rng(0)
    idx = rng.permutation(6)
    assert aurc([conf[i] for i in idx], [correct[i] for i in idx])["aurc"] == pytest.approx(
        np.mean(values)
    )


def test_curve_equals_sklearn_precision_recall_curve():
    """Selective accuracy at threshold t is the precision of 'confidence >= t predicts
    correct'; coverage is the share predicted positive."""
    from sklearn.metrics import precision_recall_curve

    rng = np.random.default_rng(0)
    conf = np.round(rng.uniform(size=300), 2)  # rounding makes ties
    correct = rng.uniform(size=300) < conf  # calibrated-ish
    ours = risk_coverage(conf.tolist(), correct.tolist())
    precision, recall, thresholds = precision_recall_curve(correct, conf)
    n_pos = correct.sum()
    by_t = dict(
        zip(ours["threshold"], zip(ours["accuracy"], ours["coverage"], strict=True), strict=True)
    )
    for p, r, t in zip(precision[:-1], recall[:-1], thresholds, strict=True):
        acc, cov = by_t[float(t)]
        assert acc == pytest.approx(p)
        assert cov == pytest.approx(r * n_pos / p / len(conf))
    assert len(ours["threshold"]) == len(np.unique(conf))


def test_ece_hand_computed():
    # bin [0.2, 0.3): 2 rows conf .2/.2, 1 correct -> |0.5 - 0.2| * 2/4
    # bin [0.9, 1.0]: 2 rows conf .9/1.0, 2 correct -> |1 - 0.95| * 2/4
    assert expected_calibration_error(
        [0.2, 0.2, 0.9, 1.0], [True, False, True, True]
    ) == pytest.approx(0.3 * 0.5 + 0.05 * 0.5)
    assert expected_calibration_error([], []) is None


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="same length"):
        risk_coverage([0.5], [True, False])
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        aurc([1.5], [True])
    m = calibration_metrics([None, 0.5], [False, True], (0.3,))
    assert m["n_without_confidence"] == 1 and m["thresholds"][0]["accuracy"] == 1.0
    assert risk_coverage([], [])["coverage"] == [] and aurc([], [])["aurc"] is None


def test_curve_thinned_for_the_report_keeps_its_ends():
    from medray.eval.calibration import thin_curve

    rng = np.random.default_rng(2)
    conf = rng.uniform(size=5000).tolist()
    correct = (rng.uniform(size=5000) < 0.7).tolist()
    full = risk_coverage(conf, correct)
    m = calibration_metrics(conf, correct, (0.5,), max_curve_points=100)
    assert len(m["curve"]["coverage"]) == 100
    assert m["curve"]["coverage"][0] == full["coverage"][0] and m["curve"]["coverage"][-1] == 1.0
    assert set(m["curve"]["accuracy"]) <= set(full["accuracy"])
    assert thin_curve(full, 10**6) == full
