"""Held-out evaluation of an SFT model: greedy generation (Ray Data) and the project's metrics.

:class:`SFTGenerator` is a Ray Data callable class (pandas batches in, the same batches
with ``raw_text`` out): it loads the trained model once through the one loader
(:func:`medray.models.finetuned.load_finetuned`: a LoRA adapter merged into its base, or a
full checkpoint) and answers each row's contract prompt with the one generate path
(:func:`medray.models.generate.generate`), greedy with the contract's settings: the same
call a Serve deployment makes, so a served answer equals the evaluated one. :func:`score`
turns generated rows into metrics with the contracts' parsers and the project's metrics
(:mod:`medray.eval.vqa`, :mod:`medray.eval.structure`, :mod:`medray.eval.mcq`,
:mod:`medray.eval.text`).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


class SFTGenerator:
    """Ray Data callable class: ``prompt`` (+ ``image``) columns -> ``raw_text``."""

    def __init__(self, checkpoint: str, kind: str, max_new_tokens: int, blank_images=False):
        import torch

        from medray.models.finetuned import load_finetuned
        from medray.models.generate import GenerationParams

        torch.set_num_threads(1)
        self.kind = kind
        self.params = GenerationParams(max_new_tokens=max_new_tokens)
        self.blank = blank_images
        self.model, self.proc, self.source = load_finetuned(checkpoint, kind)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        from medray.contracts.reasoner import row_image
        from medray.models.generate import generate, render

        if self.kind == "vlm":
            texts = [render(self.proc, json.loads(p)) for p in batch["prompt"]]
            images = [row_image({"image": b}, self.blank) for b in batch["image"]]
            images = [im for im in images if im is not None]
        else:
            texts, images = list(batch["prompt"]), []
        out = generate(self.model, self.proc, texts, images, self.params)
        batch = batch.drop(columns=[c for c in ("image",) if c in batch.columns])
        batch["raw_text"] = [g.text for g in out]
        return batch


def _as_list(value: Any) -> list[Any]:
    """A list column's value as a list (Ray Data may hand back a numpy array or None)."""
    return [] if value is None else list(value)


def majority_rate(answers: Sequence[str]) -> float | None:
    """Share of the most frequent normalised answer (the text-prior baseline)."""
    from medray.eval.vqa import normalize_answer

    if not answers:
        return None
    counts = Counter(normalize_answer(a) for a in answers)
    return counts.most_common(1)[0][1] / len(answers)


def score(task: str, rows: Sequence[Mapping[str, Any]], fmt: str | None = None) -> dict[str, Any]:
    """Metrics of generated rows (``raw_text`` plus the reference fields); ``fmt``: the
    reasoner's output format (default: the full one)."""
    if task == "reasoner":
        return score_reasoner(rows, fmt)
    if task == "medqa":
        return score_medqa(rows)
    return score_summariser(rows)


def score_reasoner(rows: Sequence[Mapping[str, Any]], fmt: str | None = None) -> dict[str, Any]:
    """Closed/open accuracy, JSON validity and box rate of structured answers (parsed
    with the required keys of output format ``fmt``)."""
    from medray.contracts.reasoner import DEFAULT_FORMAT, parse
    from medray.eval import structure, vqa

    scored = []
    for r in rows:
        p = parse(r["raw_text"], fmt=fmt or DEFAULT_FORMAT)
        pred = p.value.answer if p.value else None
        scored.append(
            {
                "answer_type": r.get("answer_type"),
                "content_type": r.get("content_type"),
                "modality": r.get("modality"),
                "organ": r.get("organ"),
                "correct": vqa.is_correct(pred, r.get("answer"), r.get("answer_type")),
                "recall": vqa.token_recall(pred, r.get("answer"))
                if r.get("answer_type") == "open"
                else None,
                "parse_ok": p.ok,
                "repaired": p.repaired,
                "pred_boxes": [list(b) for b in p.value.boxes] if p.value else [],
                "boxes": _as_list(r.get("boxes")),
            }
        )
    v = vqa.vqa_metrics(scored)
    s = structure.structure_metrics(scored)
    closed = [r.get("answer") for r in rows if r.get("answer_type") == "closed"]
    return {
        "n": len(rows),
        "closed_accuracy": v.get("closed", {}).get("accuracy"),
        "open_accuracy": v.get("open", {}).get("accuracy"),
        "open_token_recall": v.get("open", {}).get("token_recall"),
        "closed_majority_rate": majority_rate(closed),
        "json_validity": s.get("json_validity"),
        "box_rate": s.get("box_rate"),
        "vqa": v,
        "structure": s,
    }


def score_medqa(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Multiple-choice accuracy of the letter each completion starts with."""
    from medray.contracts.medqa import parse_letter
    from medray.eval.mcq import mcq_accuracy

    preds = [parse_letter(r["raw_text"]) for r in rows]
    answers = [r["answer"] for r in rows]
    return {
        "n": len(rows),
        "accuracy": mcq_accuracy(preds, answers, [list(r["choices"]) for r in rows]),
        "answered_rate": sum(p is not None for p in preds) / len(rows) if rows else None,
        "majority_rate": majority_rate([str(list(r["choices"]).index(r["answer"])) for r in rows]),
    }


def score_summariser(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """BLEU / ROUGE of generated summaries against the impressions, and the ROUGE-L of
    copying the input findings (``copy_input_rougeL``: the baseline a summary must beat)."""
    from medray.contracts.summariser import parse
    from medray.eval.text import rouge, text_metrics

    hyps = [parse(r["raw_text"]) for r in rows]
    refs = [r["impression"] for r in rows]
    copied = [(r.get("findings") or "", r["impression"]) for r in rows if r["impression"]]
    copy = rouge([c[0] for c in copied], [c[1] for c in copied])["rougeL"] if copied else None
    return {"n": len(rows), **(text_metrics(hyps, refs) or {}), "copy_input_rougeL": copy}
