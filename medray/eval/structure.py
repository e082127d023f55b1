"""Metrics of the structured answer: JSON validity, box rate and box IoU against reference boxes.

The parser itself lives in ``medray.structured``; batch inference stores its verdict
(``parse_ok``, ``repaired``, ``pred_boxes``), which is all that is measured here.

Boxes are ``[x1, y1, x2, y2]`` in normalised [0, 1] image coordinates. Predicted boxes
are matched one-to-one to reference boxes with the Hungarian algorithm
(``scipy.optimize.linear_sum_assignment``, maximising the total IoU). Per row with
reference boxes:

* ``iou``: the mean over the *reference* boxes of the IoU of the matched prediction (an
  unmatched reference box scores 0, so missing boxes cost as much as wrong ones);
* ``best_iou``: the largest IoU of any predicted box with any reference box (does the
  model point at some annotated region at all);
* hits at IoU >= 0.5 for recall (over reference boxes) and precision (over predictions).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

IOU_HIT = 0.5


def iou_matrix(a: Sequence[Sequence[float]], b: Sequence[Sequence[float]]) -> np.ndarray:
    """Pairwise IoU of boxes ``a`` (n, 4) and ``b`` (m, 4); degenerate boxes have IoU 0."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    w = np.clip(
        np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None
    )
    h = np.clip(
        np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None
    )
    inter = w * h
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def match_boxes(
    pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]
) -> list[tuple[int, int, float]]:
    """One-to-one matching of predicted to reference boxes maximising the total IoU.

    Returns:
        ``(pred_index, ref_index, iou)`` for each matched pair (``min(n, m)`` pairs).
    """
    from scipy.optimize import linear_sum_assignment

    if len(pred) == 0 or len(ref) == 0:
        return []
    ious = iou_matrix(pred, ref)
    rows, cols = linear_sum_assignment(ious, maximize=True)
    return [(int(i), int(j), float(ious[i, j])) for i, j in zip(rows, cols, strict=True)]


def box_scores(pred: Sequence[Sequence[float]], ref: Sequence[Sequence[float]]) -> dict[str, Any]:
    """One row's box figures against its reference boxes (see the module docstring)."""
    pairs = match_boxes(pred, ref)
    hits = sum(iou >= IOU_HIT for _, _, iou in pairs)
    best = float(iou_matrix(pred, ref).max()) if len(pred) and len(ref) else 0.0
    return {
        "iou": sum(iou for _, _, iou in pairs) / len(ref) if len(ref) else None,
        "best_iou": best,
        "hits": hits,
        "n_pred": len(pred),
        "n_ref": len(ref),
    }


def ref_box_coords(boxes: Iterable[Mapping[str, Any]] | None) -> list[list[float]]:
    """Reference boxes of the unified schema (``{label, x1, y1, x2, y2}``) as coordinate lists."""
    return [[b["x1"], b["y1"], b["x2"], b["y2"]] for b in boxes or ()]


def box_in_range(box: Sequence[float]) -> bool:
    """A well-formed normalised box: coordinates in [0, 1], ``x1 < x2``, ``y1 < y2``."""
    x1, y1, x2, y2 = box
    return all(0.0 <= v <= 1.0 for v in box) and x1 < x2 and y1 < y2


def structure_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """JSON validity, repair rate, box rate and box IoU over prediction rows.

    Args:
        rows: dicts with ``parse_ok``, ``repaired``, ``pred_boxes`` and ``boxes``
            (reference boxes of the unified schema).

    Returns:
        ``n``, ``json_validity`` (share with ``parse_ok``), ``repaired_rate`` (valid only
        after repairs), ``box_rate`` (share with at least one predicted box),
        ``malformed_box_rate`` (share with a box outside [0, 1] or inverted) and, over the
        ``n_with_ref_boxes`` rows that have reference boxes: ``box_iou``, ``best_iou``,
        ``box_recall@0.5`` and ``box_precision@0.5``.
    """
    rows = list(rows)
    n = len(rows)
    out: dict[str, Any] = {"n": n}
    if not n:
        return out
    out["json_validity"] = sum(bool(r["parse_ok"]) for r in rows) / n
    out["repaired_rate"] = sum(bool(r["parse_ok"] and r.get("repaired")) for r in rows) / n
    out["box_rate"] = sum(bool(r.get("pred_boxes")) for r in rows) / n
    out["malformed_box_rate"] = (
        sum(any(not box_in_range(b) for b in r.get("pred_boxes") or ()) for r in rows) / n
    )
    scored = [
        box_scores(r.get("pred_boxes") or [], ref_box_coords(r.get("boxes")))
        for r in rows
        if r.get("boxes")
    ]
    out["n_with_ref_boxes"] = len(scored)
    if scored:
        n_ref = sum(s["n_ref"] for s in scored)
        n_pred = sum(s["n_pred"] for s in scored)
        hits = sum(s["hits"] for s in scored)
        out["box_iou"] = float(np.mean([s["iou"] for s in scored]))
        out["best_iou"] = float(np.mean([s["best_iou"] for s in scored]))
        out["box_recall@0.5"] = hits / n_ref
        out["box_precision@0.5"] = hits / n_pred if n_pred else None
    return out
