"""Held-out evaluation of an SFT model: greedy generation (Ray Data) and the project's metrics.

:class:`SFTGenerator` is a Ray Data callable class (pandas batches in, the same batches
with ``raw_text`` out): it loads the fine-tuned model once (a peft adapter is loaded with
``PeftModel.from_pretrained`` and merged; a full model folder is loaded as is) and
answers each row's prompt greedily. :func:`score` turns generated rows into metrics with
the project's own functions: :func:`medray.structured.parse_answer` for the reasoner's
JSON, :mod:`medray.eval.vqa` (closed/open accuracy), :mod:`medray.eval.structure` (JSON
validity, box rate), :mod:`medray.eval.mcq` and :mod:`medray.eval.text`.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

log = logging.getLogger(__name__)


def load_finetuned(path: str, kind: str, settings=None):
    """``(model, processing)`` from a final SFT checkpoint folder (adapter or full model)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer

    folder = Path(path)
    marker = json.loads((folder / "medray_final.json").read_text())
    is_adapter = (folder / "adapter_config.json").is_file()
    base = marker["base_model"] if is_adapter else str(folder)
    cls = AutoModelForImageTextToText if kind == "vlm" else AutoModelForCausalLM
    model = cls.from_pretrained(base, dtype=torch.float32)
    if is_adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(folder)).merge_and_unload()
    if kind == "vlm":
        from medray.train.sft_recipe import SFTRecipeSettings, load_processor

        processing = load_processor(str(folder), settings or SFTRecipeSettings())
        processing.tokenizer.padding_side = "left"
    else:
        processing = AutoTokenizer.from_pretrained(str(folder))
        processing.padding_side = "left"
    model.eval()
    return model, processing


class SFTGenerator:
    """Ray Data callable class: ``prompt`` (+ ``image``) columns -> ``raw_text``."""

    def __init__(
        self, checkpoint: str, kind: str, max_new_tokens: int, blank_images=False, settings=None
    ):
        import torch

        torch.set_num_threads(1)
        self.kind = kind
        self.max_new_tokens = max_new_tokens
        self.blank = blank_images
        self.model, self.proc = load_finetuned(checkpoint, kind, settings)

    def __call__(self, batch: pd.DataFrame) -> pd.DataFrame:
        import torch

        from medray.train.sft_recipe import decode_image

        tok = self.proc.tokenizer if self.kind == "vlm" else self.proc
        if self.kind == "vlm":
            texts = [
                self.proc.apply_chat_template(json.loads(p), add_generation_prompt=True)
                for p in batch["prompt"]
            ]
            images = [decode_image(b, self.blank) for b in batch["image"]]
            inputs = self.proc(text=texts, images=images, padding=True, return_tensors="pt")
        else:
            inputs = tok(list(batch["prompt"]), padding=True, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(
                **inputs,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
            )
        new = out[:, inputs["input_ids"].shape[1] :]
        batch = batch.drop(columns=[c for c in ("image",) if c in batch.columns])
        batch["raw_text"] = tok.batch_decode(new, skip_special_tokens=True)
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


def score(task: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Metrics of generated rows (``raw_text`` plus the reference fields)."""
    if task == "reasoner":
        return score_reasoner(rows)
    if task == "medqa":
        return score_medqa(rows)
    return score_summariser(rows)


def score_reasoner(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Closed/open accuracy, JSON validity and box rate of structured answers."""
    from medray.eval import structure, vqa
    from medray.structured import parse_answer

    scored = []
    for r in rows:
        p = parse_answer(r["raw_text"])
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
    from medray.eval.mcq import mcq_accuracy
    from medray.train.sft_tasks import parse_mcq_letter

    preds = [parse_mcq_letter(r["raw_text"]) for r in rows]
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
    from medray.eval.text import rouge, text_metrics

    hyps = [r["raw_text"].strip() for r in rows]
    refs = [r["impression"] for r in rows]
    copied = [(r.get("findings") or "", r["impression"]) for r in rows if r["impression"]]
    copy = rouge([c[0] for c in copied], [c[1] for c in copied])["rougeL"] if copied else None
    return {"n": len(rows), **(text_metrics(hyps, refs) or {}), "copy_input_rougeL": copy}
