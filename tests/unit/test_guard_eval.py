"""Binary P/R/F1 of the guard benchmark against scikit-learn, and its edge cases."""

from __future__ import annotations

import random

import pytest
from sklearn.metrics import precision_recall_fscore_support

from medray.eval.classification import binary_prf, rate

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("seed", range(6))
def test_binary_prf_matches_sklearn(seed):
    rng = random.Random(seed)
    n = rng.randint(5, 60)
    y = [rng.random() < 0.4 for _ in range(n)]
    p = [rng.random() < 0.5 for _ in range(n)]
    ours = binary_prf(y, p)
    pr, rc, f1, _ = precision_recall_fscore_support(
        y, p, average="binary", pos_label=True, zero_division=0
    )
    assert ours["precision"] == pytest.approx(pr)
    assert ours["recall"] == pytest.approx(rc)
    assert ours["f1"] == pytest.approx(f1)
    assert ours["tp"] + ours["fp"] + ours["fn"] + ours["tn"] == ours["n"] == n


def test_hand_computed_fixture():
    # 3 true positives, 1 false positive, 2 false negatives, 2 true negatives.
    y = [1, 1, 1, 1, 1, 0, 0, 0]
    p = [1, 1, 1, 0, 0, 1, 0, 0]
    r = binary_prf(y, p)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (3, 1, 2, 2)
    assert r["precision"] == pytest.approx(0.75) and r["recall"] == pytest.approx(0.6)
    assert r["f1"] == pytest.approx(2 * 0.75 * 0.6 / 1.35)


def test_undefined_ratios_are_zero_and_bad_input_is_refused():
    assert binary_prf([False, False], [False, False])["precision"] == 0.0
    assert binary_prf([True], [False])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        binary_prf([True, False], [True])
    with pytest.raises(ValueError, match="no examples"):
        binary_prf([], [])
    assert rate([True, False, True, True]) == 0.75 and rate([]) == 0.0
