"""What the agent's final answer may claim, given the evidence it had.

The agent's steps fall back to deterministic text when a model output is unreadable (each
trace entry records its ``fallback``). :func:`settle` applies the rules that keep the final
answer honest about that:

* the reasoner's output did not parse (no image findings): the answer says so, names no
  diagnosis (``most_likely_diagnosis`` is None, no differential) and its confidence is 0;
* no candidate diagnosis came from the image's reasoning or its summary (retrieval topics
  and the question are not evidence about this image): no diagnosis, confidence 0;
* the diagnosis must be supported by what the reasoner itself stated in its parsed
  output (caption, reasoning steps, answer, box labels): every content word of the
  diagnosis (case-insensitive, qualifiers such as "moderate" or "left" aside) appears
  there, not negated ("no cardiomegaly" supports nothing). A diagnosis that only the
  summariser, the agent's LLM or a retrieved case/knowledge title names is not promoted:
  the first supported differential takes its place, else no diagnosis, status
  ``insufficient_evidence``, confidence 0. Retrieved items stay as citations (context);
* the diagnosis extraction or the answer step fell back (their fields were rebuilt from
  text): the model's self-reported confidence is not trusted, the deterministic
  grounding score caps it;
* the answer lists every fallback (``fallbacks``) and says in ``notice`` what it lacks.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

UNPARSED = (
    "The image model's output could not be parsed, so there are no image findings: no "
    "diagnosis is given."
)
NO_CANDIDATE = "No diagnosis was found in the image model's reasoning: no diagnosis is given."
FELL_BACK = (
    "The diagnosis or answer step fell back to deterministic text (see fallbacks): the "
    "confidence is the grounding score."
)
UNSUPPORTED = (
    "The image model's reasoning does not state {diagnosis!r} (it came from the summary, "
    "the agent's model or retrieved items, which are context, not findings about this "
    "image): no diagnosis is given."
)
REPLACED = (
    "The image model's reasoning does not state {dropped!r}; the diagnosis is "
    "{kept!r}, which it does state (confidence capped by the grounding score)."
)
ANSWER_STEPS = ("extract_diagnoses", "answer")

_TOKEN = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
# Words that qualify a diagnosis without naming it: not required to be stated.
_QUALIFIER_WORDS = (
    "a an the of and or with in on at to is are was be from for by as this that these "
    "mild moderate severe marked minimal small large tiny massive trace possible probable "
    "likely suspected early acute chronic subacute new old stable left right bilateral "
    "unilateral upper lower middle mid basal apical diffuse focal yes"
)
QUALIFIERS = frozenset(_QUALIFIER_WORDS.split())
_NEGATION_WORDS = "no not without negative absent free none nor"
NEGATIONS = frozenset(_NEGATION_WORDS.split())
NEGATION_REACH = 3  # a negation word covers this many words after it


def stated_words(parsed: Mapping[str, Any] | None) -> set[str]:
    """The words the reasoner stated, not negated: its parsed caption, reasoning steps,
    answer and box labels, lower-cased; a word within :data:`NEGATION_REACH` words after
    a negation ("no", "without", ...) does not count."""
    if not parsed:
        return set()
    parts: list[str] = [str(parsed.get("caption") or ""), str(parsed.get("answer") or "")]
    steps = parsed.get("reasoning") or []
    parts += [str(x) for x in (steps if isinstance(steps, list) else [steps])]
    for box in parsed.get("boxes") or []:
        if isinstance(box, Mapping):
            parts.append(str(box.get("label") or ""))
    out: set[str] = set()
    for part in parts:
        for clause in re.split(r"[.;:,!?\n]+", part.lower()):
            negated = 0
            for w in _TOKEN.findall(clause):
                if w in NEGATIONS:
                    negated = NEGATION_REACH
                    continue
                if negated:
                    negated -= 1
                    continue
                out.add(w)
    return out


def supported(diagnosis: str | None, stated: set[str]) -> bool:
    """Whether every content word of ``diagnosis`` is in ``stated`` (see
    :func:`stated_words`); a diagnosis with no content word is not supported."""
    words = [w for w in _TOKEN.findall((diagnosis or "").lower()) if w not in QUALIFIERS]
    return bool(words) and all(w in stated or w.rstrip("s") in stated for w in words)


def fallbacks(trace: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every step of ``trace`` that fell back, as ``{"step", "cycle", "note"}``."""
    return [
        {"step": t.get("step"), "cycle": t.get("cycle", 0), "note": t["fallback"]}
        for t in trace
        if t.get("fallback")
    ]


# Where a candidate diagnosis may come from (medray.agent.search_steps records the source):
# the extraction model, or its fallbacks, the summary and the reasoner's parsed answer.
CANDIDATE_SOURCES = ("llm", "summariser output", "reasoner's parsed answer")


def has_candidate(reasoning_ok: bool, diagnoses_source: str) -> bool:
    """Whether the image's reasoning gave a candidate diagnosis; without one :func:`settle`
    names no diagnosis and gives confidence 0, whatever was retrieved."""
    return bool(reasoning_ok) and diagnoses_source in CANDIDATE_SOURCES


def settle(
    final: dict[str, Any],
    *,
    reasoning_ok: bool,
    diagnoses_source: str,
    grounding: float,
    trace: Sequence[Mapping[str, Any]],
    parsed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``final`` with the rules of the module docstring applied (a new dict); ``parsed``
    is the reasoner's parsed output (what the diagnosis must be supported by)."""
    out = dict(final)
    fell = fallbacks(trace)
    notices: list[str] = []
    candidate = has_candidate(reasoning_ok, diagnoses_source)
    ok = candidate
    capped = False
    if not reasoning_ok:
        notices.append(UNPARSED)
        out["findings"] = []
    elif not candidate:
        notices.append(NO_CANDIDATE)
    else:
        stated = stated_words(parsed)
        diagnosis = out.get("most_likely_diagnosis")
        differential = [d for d in out.get("differential") or [] if supported(d, stated)]
        out["differential"] = differential
        if not supported(diagnosis, stated):
            if differential:
                out["most_likely_diagnosis"] = differential.pop(0)
                notices.append(
                    REPLACED.format(dropped=diagnosis, kept=out["most_likely_diagnosis"])
                )
                capped = True
            else:
                notices.append(UNSUPPORTED.format(diagnosis=diagnosis))
                ok = False
    if not ok:
        out["most_likely_diagnosis"] = None
        out["differential"] = []
        out["severity"] = "undetermined"
        out["confidence"] = 0.0
        out["status"] = "insufficient_evidence"
    else:
        out["status"] = "answered"
        if any(f["step"] in ANSWER_STEPS for f in fell):
            notices.append(FELL_BACK)
            capped = True
        if capped:
            out["confidence"] = round(min(float(out.get("confidence") or 0.0), grounding), 3)
    out["reasoning_ok"] = reasoning_ok
    out["fallbacks"] = fell
    out["notice"] = " ".join(notices) or None
    return out
