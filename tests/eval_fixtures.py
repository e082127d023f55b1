"""Hand-made prediction rows and folders for the evaluation tests.

``VQA_ROWS`` is a small run whose every figure is computed by hand in the tests: ten
VQA rows covering closed/open/choice questions, a correct and a wrong box, an unreadable
image, an invalid JSON refusal, a verbose answer, a wrong modality and counterfactual
answers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from medray.eval.predictions import write_predictions

DATASET = "/data/medray/synthetic"
SPLIT = "test"


def row(sample_id: str, **overrides: Any) -> dict[str, Any]:
    """A valid prediction row (a correct closed 'yes'), with ``overrides`` applied."""
    pred = overrides.get("pred_answer", "yes")
    base = {
        "sample_id": sample_id,
        "source": "slake",
        "split": SPLIT,
        "task": "vqa",
        "question": f"question of {sample_id}?",
        "answer": "yes",
        "answer_type": "closed",
        "modality": "x-ray",
        "organ": "chest",
        "content_type": "abnormality",
        "choices": [],
        "labels": [],
        "boxes": [],
        "raw_text": json.dumps({"caption": "c", "reasoning": ["r"], "boxes": [], "answer": pred}),
        "parse_ok": True,
        "parsed": json.dumps({"caption": "c", "reasoning": ["r"], "boxes": [], "answer": pred}),
        "parse_errors": [],
        "repaired": [],
        "pred_answer": pred,
        "pred_caption": "c",
        "pred_reasoning": ["r"],
        "pred_boxes": [],
        "confidence": 0.5,
        "latency_ms": 100.0,
        "error": "",
    }
    base.update(overrides)
    return base


def box(x1: float, y1: float, x2: float, y2: float, label: str = "lesion") -> dict[str, Any]:
    return {"label": label, "x1": x1, "y1": y1, "x2": x2, "y2": y2}


UNREADABLE = {
    "raw_text": None,
    "parse_ok": False,
    "parsed": None,
    "pred_answer": None,
    "pred_caption": None,
    "pred_reasoning": [],
    "confidence": None,
    "latency_ms": 0.0,
    "error": "image: truncated or corrupt image",
}

VQA_ROWS: list[dict[str, Any]] = [
    row("q01", answer="Yes", pred_answer="yes", confidence=0.9, boxes=[box(0.1, 0.1, 0.5, 0.5)],
        pred_boxes=[[0.1, 0.1, 0.5, 0.5]], cf_roi_answer="no", cf_random_answer="yes",
        blank_answer="yes", latency_ms=100.0),
    row("q02", answer="no", pred_answer="Yes, there is a large effusion in the left lung",
        confidence=0.8, pred_boxes=[[0.2, 0.2, 0.4, 0.4]], cf_roi_answer="yes.",
        cf_random_answer="no", blank_answer="yes", latency_ms=120.0),
    row("q03", answer="No", pred_answer="no.", confidence=0.4, cf_roi_answer="yes",
        cf_random_answer="no", blank_answer="yes", latency_ms=90.0),
    row("q04", answer="CT", answer_type="open", pred_answer="MRI", content_type="modality",
        modality="ct", organ="head", confidence=0.7, question="What modality is this?",
        latency_ms=110.0),
    row("q05", answer="left lung", answer_type="open", pred_answer="lung", confidence=0.3,
        content_type="position", boxes=[box(0.0, 0.0, 0.5, 0.5), box(0.5, 0.5, 1.0, 1.0)],
        pred_boxes=[[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.25, 0.5]], latency_ms=80.0),
    row("q06", answer="the heart", answer_type="open", pred_answer="Heart", confidence=0.6,
        content_type="organ", latency_ms=130.0),
    row("q07", answer="yes", **UNREADABLE),
    row("q08", answer="no", raw_text="I cannot determine this from the image.", parse_ok=False,
        parsed=None, parse_errors=["no JSON object found"], pred_answer=None, confidence=None,
        latency_ms=150.0),
    row("q09", answer="yes", pred_answer="maybe", confidence=0.2, latency_ms=95.0),
    row("q10", answer="Right", answer_type="choice", choices=["Left", "Right"], pred_answer="B",
        confidence=0.55, content_type="position", latency_ms=105.0),
]  # fmt: skip
# Hand-computed: correct = q01, q03, q06, q10 -> accuracy 4/10; closed (q01-3, q07-9): 2/6;
# open (q04-6): 1/3; choice: 1/1.


def write_run(
    folder: Path,
    rows: list[dict[str, Any]],
    label: str = "base",
    model: str = "tiny-qwen2-vl",
    adapter: str | None = None,
    dataset: str = DATASET,
    split: str = SPLIT,
) -> Path:
    """Write ``rows`` as a predictions folder and return it."""
    write_predictions(
        folder, rows, model=model, model_label=label, dataset=dataset, split=split, adapter=adapter
    )
    return folder


def improved_rows() -> list[dict[str, Any]]:
    """VQA_ROWS with two more questions answered right, confidently."""
    rows = [dict(r) for r in VQA_ROWS]
    for r in rows:
        if r["sample_id"] in ("q04", "q05"):
            r["pred_answer"], r["confidence"] = r["answer"], 0.95
    return rows


def report_of(runs: list[tuple[str, list[dict[str, Any]]]]) -> dict[str, Any]:
    """A report (``write_report``'s input) of ``(label, rows)`` runs on one dataset."""
    from medray.eval.metrics import run_metrics
    from medray.eval.report import REPORT_FORMAT

    out = []
    for label, rows in runs:
        metrics, _ = run_metrics(rows)
        out.append({"label": label, "path": f"/preds/{label}", "metrics": metrics,
                    "manifest": {"model": "tiny-qwen2-vl", "adapter": None, "model_label": label,
                                 "created": "2026-01-01T00:00:00+00:00"}})  # fmt: skip
    return {"format": REPORT_FORMAT, "created": "2026-01-01T00:00:00+00:00", "dataset": "/d",
            "split": "test", "fingerprint": "sha256:abc", "n_rows": 10, "settings": {},
            "aggregate": None, "runs": out}  # fmt: skip
