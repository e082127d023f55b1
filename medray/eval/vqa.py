"""VQA-RAD / SLAKE protocol accuracy: answer normalisation, closed and open accuracy, breakdowns.

The protocol the medical VQA literature uses on VQA-RAD and SLAKE scores a free-text
answer against the reference after normalising both:

* lower case (Unicode NFKC first), punctuation removed (a decimal point between digits
  stays), the articles *a / an / the* dropped, number words *zero*..*ten* written as
  digits, whitespace collapsed (:func:`normalize_answer`);
* closed questions: exact match; when the reference is yes/no, the prediction is first
  reduced to yes/no from its first word (``"Yes, there is an effusion"`` -> ``yes``,
  ``"true"`` -> ``yes``, SLAKE's ``是`` / ``否``) (:func:`canonical_yes_no`);
* open questions: exact match, and the token-recall variant used for generative models
  (the fraction of the reference's tokens that the prediction contains; Chinese text is
  tokenised per character) (:func:`token_recall`);
* choice questions: the prediction resolved to one of the choices (letter or text, see
  :mod:`medray.eval.mcq`) equals the reference.

:func:`vqa_metrics` gives the overall, closed and open figures and the breakdowns by
answer type, modality, content type, organ and language where the data has them.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {
    "zero": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "ten": "10",
}
YES_WORDS = frozenset({"yes", "yeah", "yep", "true", "correct", "是", "是的", "有"})
NO_WORDS = frozenset({"no", "nope", "false", "incorrect", "否", "不是", "没有", "无"})
BREAKDOWNS = ("answer_type", "modality", "content_type", "organ", "language")

_DOT_NOT_DECIMAL = re.compile(r"(?<!\d)\.|\.(?!\d)")
_CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def normalize_answer(text: str | None) -> str:
    """Normalise an answer the VQA-RAD / SLAKE way (see the module docstring); None -> ``""``."""
    if text is None:
        return ""
    s = unicodedata.normalize("NFKC", str(text)).lower()
    s = _DOT_NOT_DECIMAL.sub(" ", s)
    s = "".join(" " if ch != "." and unicodedata.category(ch)[0] in "PS" else ch for ch in s)
    words = [NUMBER_WORDS.get(w, w) for w in s.split() if w not in ARTICLES]
    return " ".join(words)


def tokens(text: str | None) -> list[str]:
    """Tokens of a normalised answer: words, with Chinese characters one token each."""
    out: list[str] = []
    for word in normalize_answer(text).split():
        if _CJK.search(word):
            out.extend(ch for ch in word)
        else:
            out.append(word)
    return out


def canonical_yes_no(text: str | None) -> str | None:
    """``"yes"`` or ``"no"`` if the normalised answer starts with a yes/no word, else None."""
    norm = normalize_answer(text)
    if not norm:
        return None
    if norm in YES_WORDS or norm in NO_WORDS:
        return "yes" if norm in YES_WORDS else "no"
    first = norm.split()[0]
    if first in YES_WORDS:
        return "yes"
    if first in NO_WORDS:
        return "no"
    return None


def is_yes_no(reference: str | None) -> bool:
    """The reference answer is a plain yes or no (after normalisation)."""
    norm = normalize_answer(reference)
    return norm in YES_WORDS or norm in NO_WORDS


def answers_match(pred: str | None, ref: str | None, answer_type: str | None) -> bool:
    """Two answers are the same under the protocol (yes/no canonicalised for closed ones)."""
    if pred is None or ref is None:
        return False
    if answer_type == "closed" and is_yes_no(ref):
        return canonical_yes_no(pred) == canonical_yes_no(ref)
    p, r = normalize_answer(pred), normalize_answer(ref)
    return bool(r) and p == r


def same_answer(a: str | None, b: str | None, answer_type: str | None) -> bool:
    """Two *predicted* answers say the same (symmetric): for closed questions both reduce
    to the same yes/no when both can, else their normalised texts are equal."""
    if a is None or b is None:
        return False
    if answer_type == "closed":
        ya, yb = canonical_yes_no(a), canonical_yes_no(b)
        if ya is not None and yb is not None:
            return ya == yb
    return normalize_answer(a) == normalize_answer(b)


def token_recall(pred: str | None, ref: str | None) -> float | None:
    """Fraction of the reference's tokens (with multiplicity) found in the prediction.

    None when the reference has no tokens; 0.0 for a missing prediction.
    """
    ref_tokens = Counter(tokens(ref))
    total = sum(ref_tokens.values())
    if total == 0:
        return None
    pred_tokens = Counter(tokens(pred))
    return sum(min(n, pred_tokens[t]) for t, n in ref_tokens.items()) / total


def is_correct(
    pred: str | None,
    ref: str | None,
    answer_type: str | None,
    choices: Sequence[str] | None = None,
) -> bool:
    """Whether ``pred`` answers correctly under the protocol for ``answer_type``."""
    if answer_type == "choice" and choices:
        from medray.eval.mcq import resolve_choice

        p, r = resolve_choice(pred, choices), resolve_choice(ref, choices)
        return p is not None and p == r
    return answers_match(pred, ref, answer_type)


def accuracy(correct: Sequence[bool]) -> float | None:
    """Mean of booleans (None for no rows)."""
    return sum(map(bool, correct)) / len(correct) if len(correct) else None


def _group(rows: Sequence[Mapping[str, Any]], key: str) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r.get(key) or "unknown").lower()].append(r)
    return {
        g: {"n": len(rs), "accuracy": accuracy([r["correct"] for r in rs])}
        for g, rs in sorted(groups.items())
    }


def vqa_metrics(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Protocol accuracy of scored VQA rows.

    Args:
        rows: dicts with ``correct`` (bool), ``answer_type``, ``recall`` (token recall,
            open questions) and the breakdown fields (``modality``, ``content_type``,
            ``organ``, ``language``; missing or null ones count as ``unknown``).

    Returns:
        ``n``, ``accuracy`` (all rows), ``closed`` / ``open`` / ``choice`` (each ``n``,
        ``accuracy``; open also ``token_recall``) and ``by_<field>`` breakdowns for every
        field that at least one row sets.
    """
    rows = list(rows)
    out: dict[str, Any] = {"n": len(rows), "accuracy": accuracy([r["correct"] for r in rows])}
    for kind in ("closed", "open", "choice"):
        sub = [r for r in rows if r.get("answer_type") == kind]
        if not sub:
            continue
        out[kind] = {"n": len(sub), "accuracy": accuracy([r["correct"] for r in sub])}
        if kind == "open":
            recalls = [r["recall"] for r in sub if r.get("recall") is not None]
            out[kind]["token_recall"] = sum(recalls) / len(recalls) if recalls else None
    for key in BREAKDOWNS:
        if any(r.get(key) for r in rows):
            out[f"by_{key}"] = _group(rows, key)
    return out


def confusion(refs: Sequence[str], preds: Sequence[str], labels: Sequence[str]) -> list[list[int]]:
    """Confusion counts: ``matrix[i][j]`` = rows with reference ``labels[i]`` predicted
    ``labels[j]`` (pairs with a value outside ``labels`` are not counted)."""
    index = {label: i for i, label in enumerate(labels)}
    m = [[0] * len(labels) for _ in labels]
    for r, p in zip(refs, preds, strict=True):
        if r in index and p in index:
            m[index[r]][index[p]] += 1
    return m


def yes_no_confusion(rows: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """Confusion matrix of the closed yes/no questions: rows are the references (yes, no),
    columns the predictions (yes, no, other = no answer or not reducible to yes/no).
    None without such rows."""
    refs, preds = [], []
    for r in rows:
        if r.get("answer_type") == "closed" and is_yes_no(r.get("answer")):
            refs.append(canonical_yes_no(r["answer"]))
            preds.append(canonical_yes_no(r.get("pred_answer")) or "other")
    if not refs:
        return None
    labels = ["yes", "no", "other"]
    return {
        "reference_labels": labels[:2],
        "predicted_labels": labels,
        "matrix": confusion(refs, preds, labels)[:2],
        "n": len(refs),
    }
