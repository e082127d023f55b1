"""The three SFT uses as row formats: which unified-schema rows each trains on, and how.

* ``reasoner`` (vision-language model): ``vqa`` rows; the prompt is the serving chat
  prompt with the image, the completion the structured JSON answer
  (:mod:`medray.train.reasoner_format`);
* ``summariser`` (text model): ``report`` rows with findings and an impression; the prompt
  lists the findings as numbered reasoning steps, the completion is the impression (the
  short diagnosis summary);
* ``medqa`` (text model): ``mcq`` rows (MedMCQA layout); the prompt is the question with
  lettered options, the completion ``"<letter>. <option>"`` and, where the row has one,
  ``"\\nExplanation: <rationale>"``.

:func:`training_row` turns one row into ``{"prompt": str, "completion": str, "image":
bytes | None}``: for the reasoner ``prompt`` is the JSON-encoded chat messages (the
collator renders them with the model's chat template), for text tasks it is plain text.
:func:`parse_mcq_letter` reads the option a QA completion chose.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Literal

from medray.eval.mcq import letter

Task = Literal["reasoner", "summariser", "medqa"]
TASKS: tuple[str, ...] = ("reasoner", "summariser", "medqa")
ROW_TASK: dict[str, str] = {"reasoner": "vqa", "summariser": "report", "medqa": "mcq"}
MODEL_KIND: dict[str, str] = {"reasoner": "vlm", "summariser": "lm", "medqa": "lm"}

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_ANSWER_LETTER = re.compile(r"^\s*(?:answer\s*:\s*)?\(?([A-Z])\b", re.IGNORECASE)


def usable(task: Task, row: Mapping[str, Any]) -> bool:
    """The row can be trained on for ``task`` (right kind, fields present)."""
    if row.get("task") != ROW_TASK[task]:
        return False
    if task == "reasoner":
        return bool(row.get("question")) and bool(str(row.get("answer") or "").strip())
    if task == "summariser":
        return bool(row.get("findings")) and bool(row.get("impression"))
    choices = row.get("choices")
    return (
        bool(row.get("question"))
        and choices is not None
        and len(choices) > 1
        and bool(row.get("answer"))
    )


def summary_prompt(findings: str) -> str:
    """The summariser's prompt: the findings as numbered step-wise reasoning."""
    steps = [s for s in _SENTENCE.split(" ".join(findings.split())) if s]
    lines = [f"{i}. {s}" for i, s in enumerate(steps, start=1)]
    return "Reasoning steps:\n" + "\n".join(lines) + "\nDiagnosis summary:"


def mcq_prompt(question: str, choices: list[str]) -> str:
    """The medical-QA prompt: question and lettered options."""
    opts = "\n".join(f"{letter(i)}. {c}" for i, c in enumerate(choices))
    return f"Question: {question}\nOptions:\n{opts}\nAnswer:"


def mcq_completion(row: Mapping[str, Any]) -> str:
    """``" <letter>. <option>"`` plus the explanation where the row has one."""
    choices = list(row["choices"])
    idx = choices.index(row["answer"])
    out = f" {letter(idx)}. {choices[idx]}"
    if row.get("rationale"):
        out += "\nExplanation: " + " ".join(str(row["rationale"]).split())
    return out


def parse_mcq_letter(text: str | None) -> str | None:
    """The option letter a QA completion starts with (``"B. ..."`` -> ``"B"``), or None."""
    m = _ANSWER_LETTER.match(text or "")
    return m.group(1).upper() if m else None


def prompt_for(task: Task, row: Mapping[str, Any]) -> str:
    """The prompt of ``row`` (JSON chat messages for the reasoner, text otherwise)."""
    if task == "reasoner":
        from medray.train.reasoner_format import build_messages

        return json.dumps(build_messages(row, with_answer=False), ensure_ascii=False)
    if task == "summariser":
        return summary_prompt(row["findings"])
    return mcq_prompt(row["question"], list(row["choices"]))


def training_row(task: Task, row: Mapping[str, Any]) -> dict[str, Any]:
    """``{"prompt", "completion", "image"}`` for one usable row."""
    if task == "reasoner":
        from medray.train.reasoner_format import build_target

        completion = build_target(row)
    elif task == "summariser":
        completion = " " + " ".join(str(row["impression"]).split())
    else:
        completion = mcq_completion(row)
    return {
        "prompt": prompt_for(task, row),
        "completion": completion,
        "image": row.get("image") if task == "reasoner" else None,
    }
