"""The reasoner's captions: scored against the reference caption, and as a score of their own.

The reference caption of a VQA row is the one the reasoner is trained to write
(:func:`medray.contracts.reasoner.caption_for`: modality, organ and what the row's labels
or boxes say is in the image), so BLEU / ROUGE of ``pred_caption`` against it measure how
well the model describes the image. ``caption_consistency`` (written by batch inference
with the GRPO consistency reward's function: cosine of the caption's and the question's
sentence embeddings) is a second score to answer by: its risk-coverage curve says
whether answers whose caption matches the question are more often right (prior art 004
ranks answers by it beside the model's confidence).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medray.contracts.reasoner import caption_for
from medray.eval import calibration, text

# Fields a reference caption is built from: a row with none of them has no reference.
_IMAGE_FIELDS = ("modality", "organ", "labels", "boxes")


def reference_caption(row: Mapping[str, Any]) -> str | None:
    """The caption the contract trains for ``row`` (None: the row says nothing of its image)."""
    if row.get("task") != "vqa" or not any(row.get(f) for f in _IMAGE_FIELDS):
        return None
    return caption_for(row)


def caption_metrics(
    rows: Sequence[Mapping[str, Any]], taus: Sequence[float]
) -> dict[str, Any] | None:
    """Caption figures of scored VQA rows (None when no row has a reference caption or a
    consistency score).

    Returns:
        ``n`` rows with a reference caption; ``text``: BLEU / ROUGE of the predicted
        caption against it (a missing caption scores as empty); ``consistency``: ``n``,
        ``mean`` of ``caption_consistency`` and ``calibration`` (risk-coverage, AURC and
        thresholds with the consistency as the score, over rows with an answer metric).
    """
    refs = [reference_caption(r) for r in rows]
    # A run that writes no caption at all (an output format without one) has consistency
    # 0 everywhere: a constant is no score to rank answers by.
    has_captions = any(r.get("pred_caption") for r in rows)
    scored = [r for r in rows if r.get("caption_consistency") is not None and has_captions]
    ranked = [r for r in scored if r.get("correct") is not None]
    if not any(refs) and not scored:
        return None
    return {
        "n": sum(bool(x) for x in refs),
        "text": text.text_metrics([r.get("pred_caption") for r in rows], refs),
        "consistency": {
            "n": len(scored),
            "mean": sum(r["caption_consistency"] for r in scored) / len(scored),
            "calibration": calibration.calibration_metrics(
                [r["caption_consistency"] for r in ranked],
                [r["correct"] for r in ranked],
                taus,
            )
            if ranked
            else None,
        }
        if scored
        else None,
    }
