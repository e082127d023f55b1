"""Every metric of one prediction run, from its rows: the glue between the metric modules.

:func:`score_rows` marks each row correct or not (and its token recall and failure
kinds); :func:`run_metrics` computes every figure the report shows, as a JSON-ready
dict, and :func:`headline` picks the numbers that go into the summary tables.

Which rows each metric uses:

* VQA protocol accuracy: ``task == "vqa"`` rows (unreadable ones count as wrong);
* JSON validity and boxes: ``vqa`` rows (the reasoner's structured answer to a question);
* risk-coverage and calibration: every row with an answer metric (``vqa`` and ``mcq``);
* counterfactual flips and the blank control: ``vqa`` rows that have those answers;
* MCQ accuracy: ``mcq`` rows; perplexity: rows with ``nll`` and ``n_tokens``;
* BLEU / ROUGE: rows with a ``reference_text``;
* captions: ``vqa`` rows (reference caption from the contract; consistency where batch
  inference wrote ``caption_consistency``);
* retrieval: rows with both embeddings (Recall@K both ways) or with ranked
  ``retrieved_ids`` / ``relevant_ids``;
* latency: rows that were inferred (no ``error``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from medray.eval import (
    calibration,
    captions,
    errors,
    faithfulness,
    mcq,
    retrieval,
    structure,
    text,
    uncertainty,
    vqa,
)

DEFAULT_THRESHOLDS = (0.3, 0.4, 0.5, 0.6)


@dataclass(frozen=True)
class EvalSettings:
    """What the metrics are computed with."""

    thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS  # τ for accuracy/coverage tables
    ks: tuple[int, ...] = (1, 5, 10)  # Recall@K cut-offs
    latency_bins: int = 20
    errors: errors.ErrorSettings = field(default_factory=errors.ErrorSettings)


def score_rows(
    rows: Sequence[Mapping[str, Any]], settings: EvalSettings = EvalSettings()
) -> list[dict[str, Any]]:
    """Copies of ``rows`` with ``correct`` (None where the task has no answer metric),
    ``recall`` (token recall of open questions), ``json_valid`` and ``blank_correct`` (VQA
    rows; None where not applicable) and ``failures`` (failure kinds) added."""
    out = []
    for row in rows:
        r = dict(row)
        r["correct"], r["recall"] = None, None
        if r["task"] in ("vqa", "mcq"):
            pred = r.get("pred_answer")
            if r["task"] == "mcq":
                pred = r.get("mcq_pred") or pred  # the QA model's option letter, if it gave one
            r["correct"] = not r["error"] and vqa.is_correct(
                pred, r.get("answer"), r.get("answer_type"), r.get("choices")
            )
            if r.get("answer_type") == "open":
                r["recall"] = 0.0 if r["error"] else vqa.token_recall(pred, r.get("answer"))
        # Per-row scores behind JSON validity and the blank-image control (their intervals).
        r["json_valid"] = bool(r.get("parse_ok")) if r["task"] == "vqa" else None
        blank = r.get("blank_answer")
        r["blank_correct"] = (
            None
            if blank is None or r["task"] != "vqa"
            else vqa.is_correct(blank, r.get("answer"), r.get("answer_type"), r.get("choices"))
        )
        out.append(r)
    errors.annotate_failures(out, settings.errors)
    return out


def latency_metrics(rows: Sequence[Mapping[str, Any]], bins: int = 20) -> dict[str, Any]:
    """Latency percentiles and histogram (milliseconds) of the inferred rows."""
    lat = np.array([r["latency_ms"] for r in rows if not r["error"]], dtype=np.float64)
    out: dict[str, Any] = {"n": int(lat.size)}
    if not lat.size:
        return out
    counts, edges = np.histogram(lat, bins=bins)
    return out | {
        "mean_ms": float(lat.mean()),
        "p50_ms": float(np.percentile(lat, 50)),
        "p95_ms": float(np.percentile(lat, 95)),
        "max_ms": float(lat.max()),
        "histogram": {"edges": edges.tolist(), "counts": counts.tolist()},
    }


def retrieval_run_metrics(
    rows: Sequence[Mapping[str, Any]], ks: Sequence[int]
) -> dict[str, Any] | None:
    """Recall@K of a retrieval run (embeddings and/or ranked lists); None if it is none."""
    out: dict[str, Any] = {}
    emb = [
        r
        for r in rows
        if r.get("image_embedding") and r.get("text_embedding") and r.get("reference_text")
    ]
    if emb:
        img = np.array([r["image_embedding"] for r in emb], dtype=np.float64)
        txt = np.array([r["text_embedding"] for r in emb], dtype=np.float64)
        img /= np.linalg.norm(img, axis=1, keepdims=True).clip(1e-12)
        txt /= np.linalg.norm(txt, axis=1, keepdims=True).clip(1e-12)
        out["embedding"] = retrieval.retrieval_metrics(
            img, txt, [r["reference_text"] for r in emb], ks
        )
    ranked = [r for r in rows if r.get("relevant_ids")]
    if ranked:
        out["ranked"] = retrieval.ranked_metrics(
            [r.get("retrieved_ids") or [] for r in ranked], [r["relevant_ids"] for r in ranked], ks
        )
    return out or None


def run_metrics(
    rows: Sequence[Mapping[str, Any]], settings: EvalSettings = EvalSettings()
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every figure of one run, and its scored rows (see :func:`score_rows`).

    Returns:
        ``(metrics, scored_rows)``; ``metrics`` is JSON-ready, sections without data
        are None.
    """
    scored = score_rows(rows, settings)
    vqa_rows = [r for r in scored if r["task"] == "vqa"]
    answered = [r for r in scored if r["correct"] is not None]
    mcq_rows = [r for r in scored if r["task"] == "mcq" and r.get("choices")]
    ppl_rows = [r for r in scored if r.get("nll") is not None and r.get("n_tokens")]
    return {
        "n": len(scored),
        "n_unreadable": sum(bool(r["error"]) for r in scored),
        "tasks": {t: sum(r["task"] == t for r in scored) for t in ("vqa", "report", "mcq")},
        "vqa": vqa.vqa_metrics(vqa_rows) if vqa_rows else None,
        "confusion_yes_no": vqa.yes_no_confusion(vqa_rows),
        "structure": structure.structure_metrics(vqa_rows) if vqa_rows else None,
        "calibration": calibration.calibration_metrics(
            [r["confidence"] for r in answered],
            [r["correct"] for r in answered],
            settings.thresholds,
        )
        if answered
        else None,
        "captions": captions.caption_metrics(vqa_rows, settings.thresholds) if vqa_rows else None,
        "faithfulness": faithfulness.flip_rates(vqa_rows),
        "blank_control": faithfulness.blank_control(vqa_rows),
        "mcq": {
            "n": len(mcq_rows),
            "accuracy": mcq.mcq_accuracy(*_mcq_args(mcq_rows)),
            "answered_rate": mcq.answered_rate(*_mcq_args(mcq_rows)[::2]),
            "confusion": mcq.confusion(*_mcq_args(mcq_rows)),
            "n_perplexity": len(ppl_rows),
            "perplexity": mcq.perplexity(
                [r["nll"] for r in ppl_rows], [r["n_tokens"] for r in ppl_rows]
            ),
        }
        if mcq_rows or ppl_rows
        else None,
        "text": text.text_metrics(
            [r.get("generated_text") for r in scored], [r.get("reference_text") for r in scored]
        ),
        "retrieval": retrieval_run_metrics(scored, settings.ks),
        "latency": latency_metrics(scored, settings.latency_bins),
        "errors": errors.error_analysis(scored, settings.errors),
        "intervals": uncertainty.intervals(scored),
    }, scored


def _mcq_args(rows: Sequence[Mapping[str, Any]]) -> tuple[list, list, list]:
    """``(preds, answers, choices)`` of MCQ rows: the option letter, else the answer."""
    preds = [None if r["error"] else r.get("mcq_pred") or r.get("pred_answer") for r in rows]
    return preds, [r["answer"] for r in rows], [r["choices"] for r in rows]


def get_path(d: Mapping[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(d, Mapping):
            return None
        d = d.get(key)
    return d


def headline(metrics: Mapping[str, Any]) -> dict[str, float | int | None]:
    """The summary numbers of a run, in table order (None where the run has no such data)."""
    h: dict[str, float | int | None] = {
        "rows": metrics["n"],
        "unreadable rows": metrics["n_unreadable"],
        "accuracy": get_path(metrics, "vqa", "accuracy"),
        "closed accuracy": get_path(metrics, "vqa", "closed", "accuracy"),
        "open accuracy": get_path(metrics, "vqa", "open", "accuracy"),
        "open token recall": get_path(metrics, "vqa", "open", "token_recall"),
        "JSON validity": get_path(metrics, "structure", "json_validity"),
        "box rate": get_path(metrics, "structure", "box_rate"),
        "box IoU": get_path(metrics, "structure", "box_iou"),
        "AURC": get_path(metrics, "calibration", "aurc"),
        "ECE": get_path(metrics, "calibration", "ece"),
    }
    for t in get_path(metrics, "calibration", "thresholds") or ():
        h[f"accuracy@τ{t['tau']:g}"] = t["accuracy"]
        h[f"coverage@τ{t['tau']:g}"] = t["coverage"]
    h |= {
        "ROI flip rate": get_path(metrics, "faithfulness", "roi_flip_rate"),
        "random flip rate": get_path(metrics, "faithfulness", "random_flip_rate"),
        "flip gap (ROI - random)": get_path(metrics, "faithfulness", "flip_gap"),
        "blank-image accuracy": get_path(metrics, "blank_control", "blank_accuracy"),
        "MCQ accuracy": get_path(metrics, "mcq", "accuracy"),
        "perplexity": get_path(metrics, "mcq", "perplexity"),
        "BLEU": get_path(metrics, "text", "bleu"),
        "ROUGE-L": get_path(metrics, "text", "rougeL"),
        "caption BLEU": get_path(metrics, "captions", "text", "bleu"),
        "caption ROUGE-L": get_path(metrics, "captions", "text", "rougeL"),
        "caption consistency": get_path(metrics, "captions", "consistency", "mean"),
        "AURC (consistency)": get_path(metrics, "captions", "consistency", "calibration", "aurc"),
    }
    for kind, section in (("embedding", "i2t_R@"), ("ranked", "R@")):
        for key, v in (get_path(metrics, "retrieval", kind) or {}).items():
            if key.startswith(section):
                h[f"retrieval {key}"] = v
    h |= {
        "latency p50 (ms)": get_path(metrics, "latency", "p50_ms"),
        "latency p95 (ms)": get_path(metrics, "latency", "p95_ms"),
    }
    return h


# Headline keys without a better direction (a high blank-image accuracy is a strong text
# prior, neither good nor bad in itself), and keys where a smaller value is better.
NO_DIRECTION = frozenset({"rows", "blank-image accuracy"})
LOWER_IS_BETTER = frozenset(
    {
        "unreadable rows",
        "AURC",
        "AURC (consistency)",
        "ECE",
        "random flip rate",
        "perplexity",
        "latency p50 (ms)",
        "latency p95 (ms)",
    }
)
