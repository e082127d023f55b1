"""Counterfactual faithfulness: does the answer depend on the region the model points at?

Batch inference (and GRPO's reward and in-job evaluation) asks the model again with the
region of interest inpainted (``cf_roi_answer``) and with a random region of the same size
inpainted (``cf_random_answer``), both made by the reasoner's counterfactual contract
(:mod:`medray.contracts.counterfactual`). A model that really looks at the region changes its answer
(*flips*) more often in the first case: the faithfulness signal is the gap
``roi_flip_rate - random_flip_rate``. A flip is a change of the answer under the VQA
protocol's normalisation (:func:`medray.eval.vqa.same_answer`), so ``"Yes."`` -> ``"yes"``
is not a flip.

The blank-image control (``blank_answer``, the answer without any image) measures the
text prior: its accuracy is what the model gets right from the question alone, and
``accuracy - blank_accuracy`` is what the image adds.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from medray.eval.vqa import is_correct, same_answer


def _flip_rate(rows: list[Mapping[str, Any]], column: str) -> tuple[float | None, int]:
    pairs = [r for r in rows if r.get("pred_answer") is not None and r.get(column) is not None]
    if not pairs:
        return None, 0
    flips = sum(not same_answer(r[column], r["pred_answer"], r.get("answer_type")) for r in pairs)
    return flips / len(pairs), len(pairs)


def flip_rates(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """ROI and random-region flip rates, their gap, and the share of rows that behave
    faithfully (flip under ROI inpainting, not under random inpainting); the same per kind
    of region of interest (``by_kind``: a lesion the question names, an organ it names,
    the only box, the model's boxes; :data:`medray.contracts.counterfactual.KINDS`).

    Args:
        rows: dicts with ``pred_answer``, ``answer_type`` and optional ``cf_roi_answer`` /
            ``cf_random_answer`` / ``cf_kind``; rows without an answer or without the
            counterfactual are left out of that rate.

    Returns:
        None when no row has a counterfactual answer.
    """
    rows = list(rows)
    out = _rates(rows)
    if out is not None:
        kinds = sorted({r["cf_kind"] for r in rows if r.get("cf_kind")})
        out["by_kind"] = {k: _rates([r for r in rows if r.get("cf_kind") == k]) for k in kinds}
    return out


def _rates(rows: list[Mapping[str, Any]]) -> dict[str, Any] | None:
    roi, n_roi = _flip_rate(rows, "cf_roi_answer")
    rnd, n_rnd = _flip_rate(rows, "cf_random_answer")
    if not n_roi and not n_rnd:
        return None
    both = [
        r
        for r in rows
        if r.get("pred_answer") is not None
        and r.get("cf_roi_answer") is not None
        and r.get("cf_random_answer") is not None
    ]
    faithful = sum(
        not same_answer(r["cf_roi_answer"], r["pred_answer"], r.get("answer_type"))
        and same_answer(r["cf_random_answer"], r["pred_answer"], r.get("answer_type"))
        for r in both
    )
    return {
        "roi_flip_rate": roi,
        "random_flip_rate": rnd,
        "flip_gap": None if roi is None or rnd is None else roi - rnd,
        "faithful_rate": faithful / len(both) if both else None,
        "n_roi": n_roi,
        "n_random": n_rnd,
        "n_both": len(both),
    }


def blank_control(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Accuracy with a blank image beside the real accuracy on the same rows.

    Args:
        rows: scored dicts with ``correct``, ``answer``, ``answer_type``, ``choices``,
            ``pred_answer`` and optional ``blank_answer``.

    Returns:
        ``n``, ``accuracy`` and ``blank_accuracy`` on the rows that have a blank answer,
        ``image_gain`` (their difference) and ``blank_agreement`` (the blank answer equals
        the real one); None when no row has a blank answer.
    """
    sub = [r for r in rows if r.get("blank_answer") is not None]
    if not sub:
        return None
    n = len(sub)
    acc = sum(bool(r["correct"]) for r in sub) / n
    blank = (
        sum(
            is_correct(r["blank_answer"], r.get("answer"), r.get("answer_type"), r.get("choices"))
            for r in sub
        )
        / n
    )
    agree = sum(
        same_answer(r["blank_answer"], r.get("pred_answer"), r.get("answer_type")) for r in sub
    )
    return {
        "n": n,
        "accuracy": acc,
        "blank_accuracy": blank,
        "image_gain": acc - blank,
        "blank_agreement": agree / n,
    }
