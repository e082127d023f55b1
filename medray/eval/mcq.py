"""Multiple-choice accuracy and perplexity for the text QA model (MedMCQA style).

A prediction names an option by letter (``"B"``, ``"(b)"``, ``"B."``, ``"Option B"``,
``"Answer: B"``, ``"B. Aspirin"``) or by its text; :func:`resolve_choice` maps either to
the option's index. Perplexity is corpus-level: ``exp(sum(nll) / sum(n_tokens))`` over
the rows that have both, where ``nll`` is a row's summed negative log-likelihood (nats)
of its reference answer tokens and ``n_tokens`` the number of those tokens, i.e. the
exponential of the mean token cross-entropy.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Sequence

from medray.eval.vqa import normalize_answer

LETTERS = string.ascii_uppercase

_LETTER = re.compile(
    r"^\s*(?:(?:the\s+)?(?:correct\s+)?(?:answer|option|choice)\s*(?:is)?\s*[:\-]?\s*)?"
    r"[\(\[]?([A-Za-z])[\)\]]?(?:[\.\):,]\s*.*|\s*)$",
    re.IGNORECASE | re.DOTALL,
)


def letter(index: int) -> str:
    """The option letter of a 0-based index (0 -> ``A``)."""
    return LETTERS[index]


def names_letter(pred: str | None) -> bool:
    """``pred`` names an option by its letter (``"B"``, ``"(b)"``, ``"Answer: B. ..."``)."""
    return bool(pred) and _LETTER.match(pred.strip()) is not None


def _choice_text(text: str) -> str:
    # An option can be just "A" or "The": normalisation would erase it (articles).
    return normalize_answer(text) or " ".join(text.lower().split())


def resolve_choice(pred: str | None, choices: Sequence[str]) -> int | None:
    """Index of the option ``pred`` names (by letter or by text), or None.

    Text wins over letters when both could apply (an option whose text is ``"A"``).
    """
    if pred is None or not pred.strip() or not choices:
        return None
    norm = _choice_text(pred)
    texts = [_choice_text(c) for c in choices]
    if norm in texts:
        return texts.index(norm)
    m = _LETTER.match(pred.strip())
    if m:
        idx = LETTERS.index(m.group(1).upper())
        if idx < len(choices):
            rest = pred.strip()[m.end(1) :].lstrip(").]:,- ").strip()
            # "B. <text>" must agree with option B's text when a text follows.
            if not rest or _choice_text(rest) == texts[idx]:
                return idx
    return None


def mcq_accuracy(
    preds: Sequence[str | None], answers: Sequence[str], choices: Sequence[Sequence[str]]
) -> float | None:
    """Fraction of questions whose predicted option is the reference option (None: no rows)."""
    if not len(preds) == len(answers) == len(choices):
        raise ValueError("preds, answers and choices must have the same length")
    if not preds:
        return None
    hits = 0
    for p, a, c in zip(preds, answers, choices, strict=True):
        gold = resolve_choice(a, c)
        if gold is None:
            raise ValueError(f"reference answer {a!r} is not one of the choices {list(c)}")
        hits += resolve_choice(p, c) == gold
    return hits / len(preds)


def answered_rate(preds: Sequence[str | None], choices: Sequence[Sequence[str]]) -> float | None:
    """Share of predictions that name one of their options (None: no rows)."""
    if not preds:
        return None
    return sum(resolve_choice(p, c) is not None for p, c in zip(preds, choices, strict=True)) / len(
        preds
    )


def confusion(
    preds: Sequence[str | None], answers: Sequence[str], choices: Sequence[Sequence[str]]
) -> dict[str, dict[str, int]]:
    """Counts of (reference option letter -> predicted option letter); a prediction that
    names no option counts under ``"none"``. Only letters that occur are keys."""
    out: dict[str, dict[str, int]] = {}
    for p, a, c in zip(preds, answers, choices, strict=True):
        gold, got = resolve_choice(a, c), resolve_choice(p, c)
        if gold is None:
            raise ValueError(f"reference answer {a!r} is not one of the choices {list(c)}")
        row = out.setdefault(letter(gold), {})
        key = "none" if got is None else letter(got)
        row[key] = row.get(key, 0) + 1
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def perplexity(nll: Sequence[float], n_tokens: Sequence[int]) -> float | None:
    """Corpus perplexity ``exp(sum(nll) / sum(n_tokens))`` (None when there are no tokens)."""
    if len(nll) != len(n_tokens):
        raise ValueError("nll and n_tokens must have the same length")
    total = sum(int(n) for n in n_tokens)
    if total <= 0:
        return None
    if any(int(n) < 0 for n in n_tokens):
        raise ValueError("n_tokens must be non-negative")
    return math.exp(sum(float(x) for x in nll) / total)
