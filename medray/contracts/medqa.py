"""The text medical-QA model's contract: prompt, answer format and its parser.

THE one home of the QA model's format, used by SFT (``sft_tasks``, task ``medqa``), its
held-out evaluation and the Serve deployment behind ``POST /generate``. The model is a
causal text LM that sees the prompt as plain text and continues it (as trl's
prompt-completion path trains it).

* Prompt (:func:`prompt`): ``"Question: <q>\\nOptions:\\nA. <opt>\\n...\\nAnswer:"``;
  a free question (``/generate``) has no ``Options`` block.
* Answer format (:func:`target`): ``" <letter>. <option>"`` and, where the row has a
  rationale, ``"\\nExplanation: <rationale>"``.
* Parser (:func:`parse`): the option letter and text, and the explanation;
  :func:`parse_letter` reads only the letter.
* Generation: greedy, :data:`MAX_NEW_TOKENS` tokens (:data:`GENERATION`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medray.eval.mcq import letter
from medray.models.generate import GenerationParams

__all__ = [
    "GENERATION",
    "MAX_NEW_TOKENS",
    "QAAnswer",
    "parse",
    "parse_letter",
    "prompt",
    "target",
]

MAX_NEW_TOKENS = 64
GENERATION = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)
_ANSWER_LETTER = re.compile(r"^\s*(?:answer\s*:\s*)?\(?([A-Z])\b", re.IGNORECASE)
_EXPLANATION = re.compile(r"\n\s*Explanation:\s*", re.IGNORECASE)


@dataclass(frozen=True)
class QAAnswer:
    """A parsed QA completion: the answer line, its option letter (if any), explanation."""

    answer: str
    letter: str | None
    explanation: str


def prompt(question: str, choices: Sequence[str] | None = None) -> str:
    """The QA prompt: the question, the lettered options when there are any.

    Raises:
        ValueError: an empty question.
    """
    q = " ".join(str(question or "").split())
    if not q:
        raise ValueError("the QA model needs a question")
    if not choices:
        return f"Question: {q}\nAnswer:"
    opts = "\n".join(f"{letter(i)}. {c}" for i, c in enumerate(choices))
    return f"Question: {q}\nOptions:\n{opts}\nAnswer:"


def target(row: Mapping[str, Any]) -> str:
    """``" <letter>. <option>"`` plus the explanation where the row has one."""
    choices = list(row["choices"])
    idx = choices.index(row["answer"])
    out = f" {letter(idx)}. {choices[idx]}"
    if row.get("rationale"):
        out += "\nExplanation: " + " ".join(str(row["rationale"]).split())
    return out


def parse_letter(text: str | None) -> str | None:
    """The option letter a QA completion starts with (``"B. ..."`` -> ``"B"``), or None."""
    m = _ANSWER_LETTER.match(text or "")
    return m.group(1).upper() if m else None


def parse(text: str | None, has_choices: bool = False) -> QAAnswer:
    """A completion split into its answer line and explanation; the letter only when the
    prompt had options (a free answer starting with "A " is not option A)."""
    body = (text or "").strip()
    parts = _EXPLANATION.split(body, maxsplit=1)
    answer = parts[0].strip().splitlines()[0].strip() if parts[0].strip() else ""
    explanation = parts[1].strip() if len(parts) > 1 else ""
    return QAAnswer(answer, parse_letter(answer) if has_choices else None, explanation)
