"""The three SFT uses as row formats: which unified-schema rows each trains on, and how.

The formats themselves are the models' contracts (:mod:`medray.contracts`); this module
only picks the rows and applies them:

* ``reasoner`` (vision-language model): ``vqa`` rows; the prompt is the reasoner
  contract's chat prompt with the image, the completion its JSON target
  (:mod:`medray.contracts.reasoner`);
* ``summariser`` (text model): ``report`` rows with findings and an impression
  (:mod:`medray.contracts.summariser`);
* ``medqa`` (text model): ``mcq`` rows (MedMCQA layout) (:mod:`medray.contracts.medqa`).

:func:`training_row` turns one row into ``{"prompt": str, "completion": str, "image":
bytes | None}``: for the reasoner ``prompt`` is the JSON-encoded chat messages (the
collator and the evaluation render them with the model's chat template), for text tasks
it is plain text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from medray.contracts import medqa, summariser
from medray.contracts import reasoner as reasoner_contract

Task = Literal["reasoner", "summariser", "medqa"]
TASKS: tuple[str, ...] = ("reasoner", "summariser", "medqa")
ROW_TASK: dict[str, str] = {"reasoner": "vqa", "summariser": "report", "medqa": "mcq"}
MODEL_KIND: dict[str, str] = {"reasoner": "vlm", "summariser": "lm", "medqa": "lm"}


def usable(task: Task, row: Mapping[str, Any]) -> bool:
    """The row can be trained on for ``task`` (right kind, fields present)."""
    if row.get("task") != ROW_TASK[task]:
        return False
    if task == "reasoner":
        return bool(row.get("question")) and bool(str(row.get("answer") or "").strip())
    if task == "summariser":
        return bool(summariser.steps_from_findings(row.get("findings") or "")) and bool(
            str(row.get("impression") or "").strip()
        )
    choices = row.get("choices")
    return (
        bool(row.get("question"))
        and choices is not None
        and len(choices) > 1
        and bool(row.get("answer"))
    )


def prompt_for(
    task: Task, row: Mapping[str, Any], fmt: str = reasoner_contract.DEFAULT_FORMAT
) -> str:
    """The prompt of ``row`` (JSON chat messages for the reasoner, in its output format
    ``fmt``; text otherwise)."""
    if task == "reasoner":
        msgs = reasoner_contract.build_messages(row, with_answer=False, fmt=fmt)
        return json.dumps(msgs, ensure_ascii=False)
    if task == "summariser":
        return summariser.prompt(summariser.steps_from_findings(row["findings"]))
    return medqa.prompt(row["question"], list(row["choices"]))


def training_row(
    task: Task, row: Mapping[str, Any], fmt: str = reasoner_contract.DEFAULT_FORMAT
) -> dict[str, Any]:
    """``{"prompt", "completion", "image"}`` for one usable row (``fmt``: the reasoner's
    output format)."""
    if task == "reasoner":
        completion = reasoner_contract.build_target(row, fmt)
    elif task == "summariser":
        completion = summariser.target(row)
    else:
        completion = medqa.target(row)
    return {
        "prompt": prompt_for(task, row, fmt),
        "completion": completion,
        "image": row.get("image") if task == "reasoner" else None,
    }
