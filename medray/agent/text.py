"""Text helpers the agent's steps share: reading a model's values, shaping evidence for
prompts, and redacting a repeated system prompt."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from medray.agent import prompts as P

SEVERITIES = ("low", "moderate", "high", "urgent", "undetermined")
LABEL = re.compile(r"\[?\b([KCW]\d{1,3})\b\]?")
WORD = re.compile(r"[a-z][a-z0-9-]{3,}")
MAX_ITEM_CHARS = 200  # one finding / diagnosis / step as read from the model
EVIDENCE_CHARS = 320  # of each retrieved item shown to the model
RAW_CHARS = 2000  # of each raw model output kept in the trace

UNSEARCHABLE_GAPS = ("knowledge base:", "the reasoner's output could not be parsed")


def gap_topic(gap: str, errors: Sequence[str]) -> str | None:
    """What a gap asks to look up, or None for a gap that is a system failure (a failed
    search, an unparsable model output): those are reported, never sent as queries."""
    m = re.match(r"no retrieved evidence mentions '(.+)'$", gap)
    if m:
        return m.group(1)
    if gap in errors or gap.startswith(UNSEARCHABLE_GAPS) or "search failed" in gap:
        return None
    return gap


def clean(text: Any, limit: int = MAX_ITEM_CHARS) -> str:
    s = " ".join(str(text).split())
    return s[:limit]


def str_list(value: Any, limit: int = 8) -> list[str] | None:
    """A list of non-empty strings from a model's value, or None if it is not one."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return None
    out = [clean(v) for v in value if isinstance(v, str | int | float) and clean(v)]
    out = [v for v in out if re.search(r"[A-Za-z]", v)]
    return list(dict.fromkeys(out))[:limit] or None


def words(text: str) -> set[str]:
    return set(WORD.findall(text.lower()))


def shingles(text: str, n: int = 6) -> set[str]:
    words = re.findall(r"[a-z]+", text.lower())
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


SYSTEM_SHINGLES = shingles(P.SYSTEM_PROMPT)
LEAK_REDACTION = "[removed: the model repeated its instructions]"


def redact_instructions(text: str) -> str:
    """``text``, or a redaction notice if it repeats six or more words of the system prompt."""
    return LEAK_REDACTION if shingles(text) & SYSTEM_SHINGLES else text


def evidence_block(evidence: Mapping[str, Mapping[str, Any]]) -> str:
    if not evidence:
        return "(no evidence was retrieved)"
    lines = []
    for label, item in evidence.items():
        title = clean(item.get("title") or item.get("labels") or "", 80)
        lines.append(f"[{label}] {title}: {clean(item['text'], EVIDENCE_CHARS)}")
    return "\n".join(lines)


def item_text(hit: Mapping[str, Any]) -> str:
    return str(hit.get("text") or hit.get("report") or hit.get("content") or "")


# --------------------------------------------------------------------------- the agent


def confidence_value(value: Any) -> float | None:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    if c != c:  # NaN
        return None
    if 1.0 < c <= 100.0:
        c /= 100.0
    return round(c, 3) if 0.0 <= c <= 1.0 else None
