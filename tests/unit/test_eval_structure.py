"""JSON validity, box rate, IoU (vs torchvision) and Hungarian matching (vs brute force)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from eval_fixtures import VQA_ROWS

from medray.eval.structure import box_scores, iou_matrix, match_boxes, structure_metrics

pytestmark = pytest.mark.unit


def _random_boxes(rng, n):
    xy = rng.uniform(0, 0.7, size=(n, 2))
    wh = rng.uniform(0.05, 0.3, size=(n, 2))
    return np.concatenate([xy, xy + wh], axis=1)


def test_iou_equals_torchvision():
    import torch
    from torchvision.ops import box_iou

    rng = np.random.default_rng(0)
    a, b = _random_boxes(rng, 30), _random_boxes(rng, 20)
    ref = box_iou(torch.tensor(a), torch.tensor(b)).numpy()
    ours = iou_matrix(a, b)
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert (ours > 0).mean() > 0.1  # the fixture has overlapping boxes


def test_iou_hand_values_and_degenerate_boxes():
    assert iou_matrix([[0, 0, 1, 1]], [[0, 0, 0.5, 1]])[0, 0] == pytest.approx(0.5)
    assert iou_matrix([[0, 0, 0.5, 0.5]], [[0.5, 0.5, 1, 1]])[0, 0] == 0.0  # touching
    assert iou_matrix([[0.2, 0.2, 0.2, 0.4]], [[0.2, 0.2, 0.2, 0.4]])[0, 0] == 0.0  # zero area
    assert iou_matrix([[0.4, 0.4, 0.2, 0.2]], [[0, 0, 1, 1]])[0, 0] == 0.0  # inverted


def test_hungarian_matching_equals_brute_force():
    rng = np.random.default_rng(3)
    for _ in range(25):
        pred, ref = (
            _random_boxes(rng, int(rng.integers(1, 5))),
            _random_boxes(rng, int(rng.integers(1, 5))),
        )
        ious = iou_matrix(pred, ref)
        n = min(len(pred), len(ref))
        best = max(
            sum(ious[i, j] for i, j in zip(p, r, strict=True))
            for p in itertools.permutations(range(len(pred)), n)
            for r in itertools.permutations(range(len(ref)), n)
        )
        pairs = match_boxes(pred, ref)
        assert len(pairs) == n
        assert len({i for i, _, _ in pairs}) == n and len({j for _, j, _ in pairs}) == n
        assert sum(iou for *_, iou in pairs) == pytest.approx(best)


def _greedy_total(ious):
    ious, total = ious.copy(), 0.0
    for _ in range(min(ious.shape)):
        i, j = np.unravel_index(np.argmax(ious), ious.shape)
        total += ious[i, j]
        ious[i, :], ious[:, j] = -1, -1
    return total


def test_assignment_beats_greedy_where_greedy_fails():
    """Greedy matching (best pair first) is not optimal; the Hungarian assignment is."""
    rng = np.random.default_rng(7)
    found = 0
    for _ in range(400):
        pred, ref = _random_boxes(rng, 3), _random_boxes(rng, 3)
        ious = iou_matrix(pred, ref)
        ours = sum(iou for *_, iou in match_boxes(pred, ref))
        assert ours >= _greedy_total(ious) - 1e-12
        found += ours > _greedy_total(ious) + 1e-9
    assert found  # such cases exist and the matching handles them


def test_box_scores_hand_computed():
    ref = [[0.0, 0.0, 0.4, 0.4], [0.3, 0.0, 0.7, 0.4]]
    pred = [[0.2, 0.0, 0.6, 0.4], [0.0, 0.0, 0.35, 0.4]]
    # IoUs: pred0-ref0 0.08/0.24, pred0-ref1 0.12/0.2, pred1-ref0 0.14/0.16, pred1-ref1 0.02/0.28
    s = box_scores(pred, ref)
    assert s["iou"] == pytest.approx((0.6 + 0.875) / 2)
    assert s["best_iou"] == pytest.approx(0.875) and s["hits"] == 2
    assert box_scores([], ref) == {"iou": 0.0, "best_iou": 0.0, "hits": 0, "n_pred": 0, "n_ref": 2}


def test_structure_metrics_of_the_fixture():
    m = structure_metrics(VQA_ROWS)
    assert m["n"] == 10
    assert m["json_validity"] == pytest.approx(0.8)  # q07 unreadable, q08 invalid
    assert m["box_rate"] == pytest.approx(0.3)  # q01, q02, q05
    assert m["n_with_ref_boxes"] == 2
    # q01: exact box (1.0); q05: one exact (1.0), one half (0.5) -> mean 0.75
    assert m["box_iou"] == pytest.approx((1.0 + 0.75) / 2)
    assert m["box_recall@0.5"] == 1.0 and m["box_precision@0.5"] == 1.0
    assert m["malformed_box_rate"] == 0.0


def test_repairs_and_malformed_boxes_are_counted():
    rows = [
        {
            "parse_ok": True,
            "repaired": ["removed a trailing comma"],
            "pred_boxes": [[0.5, 0.5, 0.2, 0.9]],
        },
        {"parse_ok": True, "repaired": [], "pred_boxes": [[0.1, 0.1, 1.3, 0.9]]},
        {"parse_ok": False, "repaired": ["x"], "pred_boxes": []},
        {"parse_ok": True, "repaired": [], "pred_boxes": []},
    ]
    m = structure_metrics(rows)
    assert m["json_validity"] == 0.75 and m["repaired_rate"] == 0.25
    assert m["malformed_box_rate"] == 0.5 and m["n_with_ref_boxes"] == 0
    assert "box_iou" not in m
