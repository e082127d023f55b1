"""What the agent's final answer may claim, given the evidence it had.

The agent's steps fall back to deterministic text when a model output is unreadable (each
trace entry records its ``fallback``). :func:`settle` applies the rules that keep the final
answer honest about that:

* the reasoner's output did not parse (no image findings): the answer says so, names no
  diagnosis (``most_likely_diagnosis`` is None, no differential) and its confidence is 0;
* no candidate diagnosis came from the image's reasoning or its summary (retrieval topics
  and the question are not evidence about this image): no diagnosis, confidence 0;
* the diagnosis extraction or the answer step fell back (their fields were rebuilt from
  text): the model's self-reported confidence is not trusted, the deterministic
  grounding score caps it;
* the answer lists every fallback (``fallbacks``) and says in ``notice`` what it lacks.
"""

from __future__ import annotations

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
ANSWER_STEPS = ("extract_diagnoses", "answer")


def fallbacks(trace: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every step of ``trace`` that fell back, as ``{"step", "cycle", "note"}``."""
    return [
        {"step": t.get("step"), "cycle": t.get("cycle", 0), "note": t["fallback"]}
        for t in trace
        if t.get("fallback")
    ]


def settle(
    final: dict[str, Any],
    *,
    reasoning_ok: bool,
    diagnoses_source: str,
    grounding: float,
    trace: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """``final`` with the rules of the module docstring applied (a new dict)."""
    out = dict(final)
    fell = fallbacks(trace)
    notices: list[str] = []
    supported = reasoning_ok and diagnoses_source in (
        "llm",
        "summariser output",
        "reasoner's parsed answer",
    )
    if not reasoning_ok:
        notices.append(UNPARSED)
        out["findings"] = []
    elif not supported:
        notices.append(NO_CANDIDATE)
    if not supported:
        out["most_likely_diagnosis"] = None
        out["differential"] = []
        out["severity"] = "undetermined"
        out["confidence"] = 0.0
        out["status"] = "insufficient_evidence"
    else:
        out["status"] = "answered"
        if any(f["step"] in ANSWER_STEPS for f in fell):
            notices.append(FELL_BACK)
            out["confidence"] = round(min(float(out.get("confidence") or 0.0), grounding), 3)
    out["reasoning_ok"] = reasoning_ok
    out["fallbacks"] = fell
    out["notice"] = " ".join(notices) or None
    return out
