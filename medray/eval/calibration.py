"""Selective prediction: risk-coverage curve, AURC, accuracy at confidence thresholds, ECE.

Rows are answered in order of decreasing confidence. At threshold ``t`` the model answers
the rows with ``confidence >= t`` (the *coverage*) and its *selective accuracy* is the
accuracy on those rows; the *risk* is one minus that. The curve has one point per
distinct confidence value (tied rows enter together). A row without a confidence
(unreadable image, no answer) counts as confidence 0.

AURC (area under the risk-coverage curve, Geifman & El-Yaniv) is the mean over
``k = 1..n`` of the risk of the ``k`` most confident rows; within a group of tied
confidences the expected risk over their orderings is used, so AURC does not depend on
row order. ``e-AURC`` subtracts the AURC of an oracle that ranks every correct row first.

The prior art (VR1 on VQA-RAD / SLAKE) reports accuracy and coverage at thresholds
τ = 0.3 ... 0.6; :func:`at_thresholds` gives that table.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def _arrays(confidence: Sequence[float | None], correct: Sequence[bool]):
    if len(confidence) != len(correct):
        raise ValueError("confidence and correct must have the same length")
    conf = np.array([0.0 if c is None else float(c) for c in confidence], dtype=np.float64)
    if np.any(~np.isfinite(conf)) or np.any((conf < 0) | (conf > 1)):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, np.asarray(correct, dtype=bool)


def risk_coverage(
    confidence: Sequence[float | None], correct: Sequence[bool]
) -> dict[str, list[float]]:
    """The risk-coverage curve, one point per distinct confidence (most confident first).

    Returns:
        ``threshold``, ``coverage``, ``accuracy`` and ``risk`` lists of equal length;
        empty lists for no rows.
    """
    conf, corr = _arrays(confidence, correct)
    n = len(conf)
    if n == 0:
        return {"threshold": [], "coverage": [], "accuracy": [], "risk": []}
    order = np.argsort(-conf, kind="stable")
    c, k = conf[order], np.cumsum(corr[order])
    ends = np.flatnonzero(np.r_[c[1:] != c[:-1], True])  # last index of each tie group
    covered = ends + 1
    acc = k[ends] / covered
    return {
        "threshold": c[ends].tolist(),
        "coverage": (covered / n).tolist(),
        "accuracy": acc.tolist(),
        "risk": (1.0 - acc).tolist(),
    }


def aurc(confidence: Sequence[float | None], correct: Sequence[bool]) -> dict[str, float | None]:
    """AURC, the oracle's AURC and e-AURC (see the module docstring); None for no rows."""
    conf, corr = _arrays(confidence, correct)
    n = len(conf)
    if n == 0:
        return {"aurc": None, "aurc_optimal": None, "e_aurc": None}
    order = np.argsort(-conf, kind="stable")
    c, err = conf[order], (~corr[order]).astype(np.float64)
    starts = np.flatnonzero(np.r_[True, c[1:] != c[:-1]])
    sizes = np.diff(np.r_[starts, n])
    group_rate = np.add.reduceat(err, starts) / sizes  # error rate inside each tie group
    before = np.r_[0.0, np.cumsum(np.add.reduceat(err, starts))[:-1]]  # errors ahead of a group
    group = np.repeat(np.arange(len(starts)), sizes)
    pos = np.arange(n) - starts[group] + 1  # 1-based position inside its group
    expected_errors = before[group] + pos * group_rate[group]
    ks = np.arange(1, n + 1)
    value = float(np.mean(expected_errors / ks))
    n_correct = int(corr.sum())
    optimal = float(np.mean(np.clip(ks - n_correct, 0, None) / ks))
    return {"aurc": value, "aurc_optimal": optimal, "e_aurc": value - optimal}


def at_thresholds(
    confidence: Sequence[float | None], correct: Sequence[bool], taus: Sequence[float]
) -> list[dict[str, Any]]:
    """Coverage and selective accuracy at each threshold τ (answer iff confidence >= τ).

    Returns:
        One dict per τ: ``tau``, ``n_answered``, ``coverage``, ``accuracy`` (None when
        nothing is answered) and ``risk``.
    """
    conf, corr = _arrays(confidence, correct)
    out = []
    for tau in taus:
        mask = conf >= tau
        answered = int(mask.sum())
        acc = float(corr[mask].mean()) if answered else None
        out.append(
            {
                "tau": float(tau),
                "n_answered": answered,
                "coverage": answered / len(conf) if len(conf) else None,
                "accuracy": acc,
                "risk": None if acc is None else 1.0 - acc,
            }
        )
    return out


def expected_calibration_error(
    confidence: Sequence[float | None], correct: Sequence[bool], bins: int = 10
) -> float | None:
    """ECE with ``bins`` equal-width bins: sum over bins of |accuracy - mean confidence|
    weighted by the bin's share of rows (a confidence of 1.0 falls in the last bin)."""
    conf, corr = _arrays(confidence, correct)
    if len(conf) == 0:
        return None
    idx = np.minimum((conf * bins).astype(int), bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(corr[m].mean() - conf[m].mean())
    return float(ece)


def thin_curve(curve: dict[str, list[float]], max_points: int) -> dict[str, list[float]]:
    """At most ``max_points`` points of a curve, evenly spaced, first and last kept."""
    n = len(curve["coverage"])
    if n <= max_points:
        return curve
    idx = np.unique(np.linspace(0, n - 1, max_points).round().astype(int))
    return {k: [v[i] for i in idx] for k, v in curve.items()}


def calibration_metrics(
    confidence: Sequence[float | None],
    correct: Sequence[bool],
    taus: Sequence[float],
    max_curve_points: int = 500,
) -> dict[str, Any]:
    """Everything of this module for one run: the curve (thinned to ``max_curve_points``
    for the report; AURC and the thresholds use every row), AURC, thresholds table, ECE."""
    return {
        "n": len(confidence),
        "n_without_confidence": sum(c is None for c in confidence),
        "curve": thin_curve(risk_coverage(confidence, correct), max_curve_points),
        **aurc(confidence, correct),
        "thresholds": at_thresholds(confidence, correct, taus),
        "ece": expected_calibration_error(confidence, correct),
    }
