"""Binary classification metrics: precision, recall, F1 and the confusion counts.

Used by the guard benchmark (domain control, emergency, interaction and dose detection).
Undefined ratios (no predicted or no true positives) are 0.0, as scikit-learn's
``zero_division=0``; ``tests/unit/test_guard_eval.py`` checks the figures against
scikit-learn.
"""

from __future__ import annotations

from collections.abc import Sequence


def binary_prf(y_true: Sequence[bool], y_pred: Sequence[bool]) -> dict[str, float | int]:
    """Precision, recall and F1 of the positive class, with ``tp/fp/fn/tn`` and ``n``.

    Raises:
        ValueError: the two sequences differ in length or are empty.
    """
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("no examples to score")
    tp = sum(bool(t) and bool(p) for t, p in zip(y_true, y_pred, strict=True))
    fp = sum(not t and bool(p) for t, p in zip(y_true, y_pred, strict=True))
    fn = sum(bool(t) and not p for t, p in zip(y_true, y_pred, strict=True))
    tn = len(y_true) - tp - fp - fn
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "n": len(y_true),
    }


def rate(values: Sequence[bool]) -> float:
    """Fraction of true values (0.0 for an empty sequence)."""
    return sum(bool(v) for v in values) / len(values) if values else 0.0
