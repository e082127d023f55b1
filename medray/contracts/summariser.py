"""The summariser's contract: reasoning steps -> a short diagnosis summary.

THE one home of the summariser's prompt and target, used by SFT (``sft_tasks``, task
``summariser``), its held-out evaluation, and the Serve summariser (which feeds it the
reasoner's steps). The model is a causal text LM that sees the prompt as plain text (no
chat template: trl's prompt-completion path trains it that way) and continues it.

* Prompt (:func:`prompt`): ``"Reasoning steps:\\n1. <step>\\n2. <step>\\nDiagnosis
  summary:"``. Training takes the steps from a report's findings, one sentence each
  (:func:`steps_from_findings`); serving takes the reasoner's ``reasoning`` list, else its
  caption and answer (:func:`steps_from_answer`).
* Target (:func:`target`): a space, then the report's impression on one line.
* Generation: greedy, :data:`MAX_NEW_TOKENS` tokens (:data:`GENERATION`); the output is
  the continuation with surrounding whitespace removed (:func:`parse`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medray.models.generate import GenerationParams

__all__ = [
    "GENERATION",
    "MAX_NEW_TOKENS",
    "parse",
    "prompt",
    "steps_from_answer",
    "steps_from_findings",
    "target",
]

MAX_NEW_TOKENS = 24
GENERATION = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def steps_from_findings(findings: str) -> list[str]:
    """A report's findings as reasoning steps, one sentence each."""
    return [s for s in _SENTENCE.split(" ".join(str(findings or "").split())) if s]


def steps_from_answer(
    caption: str | None, reasoning: Sequence[str], answer: str | None
) -> list[str]:
    """The reasoner's steps to summarise: its reasoning, else its caption and answer."""
    steps = [" ".join(str(s).split()) for s in reasoning if str(s).strip()]
    if steps:
        return steps
    return [" ".join(str(t).split()) for t in (caption, answer) if t and str(t).strip()]


def prompt(steps: Sequence[str]) -> str:
    """The summariser's prompt for reasoning ``steps``.

    Raises:
        ValueError: no step to summarise.
    """
    lines = [f"{i}. {s}" for i, s in enumerate(steps, start=1) if s]
    if not lines:
        raise ValueError("the summariser needs at least one reasoning step")
    return "Reasoning steps:\n" + "\n".join(lines) + "\nDiagnosis summary:"


def target(row: Mapping[str, Any]) -> str:
    """The training completion of a report row: ``" <impression>"`` on one line."""
    return " " + " ".join(str(row["impression"]).split())


def parse(text: str) -> str:
    """The summary in a generated continuation."""
    return (text or "").strip()
