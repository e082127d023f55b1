"""The structured-output parser: THE one place that reads a reasoner's JSON answer.

The reasoner answers with one JSON object::

    {"caption": str, "reasoning": [str, ...], "boxes": [[x1, y1, x2, y2], ...], "answer": str}

with boxes normalised to ``[0, 1]`` (``x1 <= x2``, ``y1 <= y2``). Models produce that
imperfectly, so :func:`parse_answer` extracts the first JSON object from any surrounding
text or Markdown fences, parses it leniently, repairs what can be repaired and validates
the rest, reporting precisely what it did:

    >>> r = parse_answer('```json\\n{"caption": "cxr", "reasoning": "a. b", "boxes": [], "answer": "yes",}\\n```')
    >>> r.ok, r.value.reasoning, r.repaired
    (True, ('a.', 'b'), ['removed Markdown code fences', 'removed a trailing comma', "split string 'reasoning' into 2 steps"])

Repairs (each listed in ``ParseResult.repaired``): Markdown fences and surrounding text,
trailing commas, single-quoted strings, unquoted keys, Python literals
(``True``/``False``/``None``), missing closing quotes/brackets/braces at the end of a
truncated answer, key aliases and case (``Steps`` -> ``reasoning``), a string
``reasoning`` (split into sentences or lines), non-string scalars where strings belong, one
flat box instead of a list of boxes, pixel boxes when the image size is known, swapped
corners, coordinates a hair outside ``[0, 1]``, a missing ``boxes`` key (no boxes).

Irreparable problems are listed in ``ParseResult.errors`` (``ok`` is then False): no JSON
object, a top level that is not an object, missing ``caption`` / ``reasoning`` /
``answer``, an empty answer, malformed boxes (dropped), pixel boxes without an image
size (dropped), nested values where text belongs.

The lenient JSON reader underneath is :mod:`medray.lenient_json`; step-wise streaming of
the same JSON is :class:`medray.step_stream.StepStreamer`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from medray.lenient_json import JSONSyntaxError, extract_json_text, lenient_loads, loads_lenient

__all__ = [
    "FIELDS",
    "ParseResult",
    "ReasonerOutput",
    "extract_json_text",
    "loads_lenient",
    "parse_answer",
]

FIELDS = ("caption", "reasoning", "boxes", "answer")
REQUIRED = ("caption", "reasoning", "answer")  # the full format's required keys

# Names models use for our fields (lower-cased, spaces/dashes as underscores).
ALIASES = {
    "caption": "caption",
    "description": "caption",
    "image_caption": "caption",
    "reasoning": "reasoning",
    "steps": "reasoning",
    "reasoning_steps": "reasoning",
    "rationale": "reasoning",
    "chain_of_thought": "reasoning",
    "boxes": "boxes",
    "box": "boxes",
    "bbox": "boxes",
    "bboxes": "boxes",
    "bounding_boxes": "boxes",
    "answer": "answer",
    "final_answer": "answer",
}

# Coordinates within this distance outside [0, 1] are clamped (rounding noise).
_CLAMP_TOLERANCE = 0.02

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ReasonerOutput:
    """The typed reasoner answer.

    Attributes:
        caption: one-line description of the image.
        reasoning: the reasoning steps, in order.
        boxes: regions of interest ``(x1, y1, x2, y2)`` normalised to ``[0, 1]``.
        answer: the final answer.
    """

    caption: str = ""
    reasoning: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    answer: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict in the reasoner's schema."""
        return {
            "caption": self.caption,
            "reasoning": list(self.reasoning),
            "boxes": [list(b) for b in self.boxes],
            "answer": self.answer,
        }


@dataclass(frozen=True)
class ParseResult:
    """What :func:`parse_answer` made of a text.

    Attributes:
        ok: True when the value is complete and valid (possibly after repairs).
        value: the typed answer; present whenever an object was found, with the valid
            parts filled in even when ``ok`` is False; None if no object was found.
        repaired: one human-readable line per repair applied.
        errors: one human-readable line per problem that could not be repaired.
        raw: the object as parsed (before validation), or None.
    """

    ok: bool
    value: ReasonerOutput | None
    repaired: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    raw: Any = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: ``ok``, ``value``, ``repaired``, ``errors``."""
        return {
            "ok": self.ok,
            "value": self.value.to_dict() if self.value else None,
            "repaired": list(self.repaired),
            "errors": list(self.errors),
        }


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step\s*\d+\s*[:.)-])\s*", re.IGNORECASE)


def split_steps(text: str) -> list[str]:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    parts = lines if len(lines) > 1 else _SENTENCE.split(text.strip())
    return [_ENUM.sub("", p).strip() for p in parts if _ENUM.sub("", p).strip()]


def _as_text(value: Any, name: str, repaired: list[str], errors: list[str]) -> str | None:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, bool):
        repaired.append(f"converted boolean {name} to {'yes' if value else 'no'!r}")
        return "yes" if value else "no"
    if isinstance(value, int | float):
        repaired.append(f"converted numeric {name} to text")
        return str(value)
    if value is None:
        errors.append(f"{name} is null")
        return None
    errors.append(f"{name} must be a string, got {type(value).__name__}")
    return None


def _boxes(
    value: Any, image_size: tuple[int, int] | None, repaired: list[str], errors: list[str]
) -> list[Box]:
    if value is None:
        repaired.append("boxes was null; assumed no boxes")
        return []
    if not isinstance(value, list):
        errors.append(f"boxes must be a list of [x1, y1, x2, y2], got {type(value).__name__}")
        return []
    if len(value) == 4 and all(isinstance(v, int | float) for v in value):
        repaired.append("wrapped a single flat box [x1, y1, x2, y2] in a list")
        value = [value]
    out: list[Box] = []
    pixel_noted = False
    for n, box in enumerate(value):
        where = f"boxes[{n}]"
        if isinstance(box, dict):
            keys = ("x1", "y1", "x2", "y2")
            if all(k in box for k in keys):
                box = [box[k] for k in keys]
                repaired.append(f"{where}: read an {{x1, y1, x2, y2}} object as a list")
        if not isinstance(box, list) or len(box) != 4:
            errors.append(f"{where} dropped: expected 4 numbers [x1, y1, x2, y2], got {box!r}")
            continue
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in box):
            errors.append(f"{where} dropped: coordinates must be numbers, got {box!r}")
            continue
        x1, y1, x2, y2 = (float(v) for v in box)
        if max(x1, y1, x2, y2) > 1 + _CLAMP_TOLERANCE:
            if image_size is None:
                errors.append(
                    f"{where} dropped: {box!r} looks like pixel coordinates and the image size "
                    "is unknown (boxes must be normalised to [0, 1])"
                )
                continue
            w, h = image_size
            if max(x1, x2) > w * (1 + _CLAMP_TOLERANCE) or max(y1, y2) > h * (1 + _CLAMP_TOLERANCE):
                errors.append(f"{where} dropped: {box!r} lies outside the {w}x{h} image")
                continue
            x1, x2, y1, y2 = x1 / w, x2 / w, y1 / h, y2 / h
            if not pixel_noted:
                repaired.append(f"converted pixel boxes to [0, 1] using the image size {w}x{h}")
                pixel_noted = True
        if min(x1, y1, x2, y2) < -_CLAMP_TOLERANCE:
            errors.append(f"{where} dropped: negative coordinates {box!r}")
            continue
        clamped = tuple(min(1.0, max(0.0, v)) for v in (x1, y1, x2, y2))
        if clamped != (x1, y1, x2, y2):
            repaired.append(f"{where}: clamped coordinates to [0, 1]")
            x1, y1, x2, y2 = clamped
        if x1 > x2 or y1 > y2:
            x1, x2 = min(x1, x2), max(x1, x2)
            y1, y2 = min(y1, y2), max(y1, y2)
            repaired.append(f"{where}: swapped corners so that x1 <= x2 and y1 <= y2")
        out.append((round(x1, 6), round(y1, 6), round(x2, 6), round(y2, 6)))
    return out


def _normalise_keys(obj: dict[str, Any], repaired: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in obj.items():
        norm = re.sub(r"[\s-]+", "_", str(k).strip().lower())
        canon = ALIASES.get(norm)
        if canon is None:
            repaired.append(f"ignored unknown key {k!r}")
            continue
        if canon in out:
            repaired.append(f"ignored duplicate key {k!r} (kept the first {canon!r})")
            continue
        if k != canon:
            repaired.append(f"renamed key {k!r} to {canon!r}")
        out[canon] = v
    return out


def _validate(
    obj: dict[str, Any],
    image_size: tuple[int, int] | None,
    repaired: list[str],
    errors: list[str],
    required: Sequence[str] = REQUIRED,
) -> ReasonerOutput:
    obj = _normalise_keys(obj, repaired)
    for name in required:
        if name not in obj:
            errors.append(f"missing required key {name!r}")
    caption = _as_text(obj["caption"], "caption", repaired, errors) if "caption" in obj else None

    steps: list[str] = []
    if "reasoning" in obj:
        r = obj["reasoning"]
        if isinstance(r, str):
            steps = split_steps(r)
            repaired.append(f"split string 'reasoning' into {len(steps)} steps")
        elif isinstance(r, list):
            for n, item in enumerate(r):
                if isinstance(item, dict) and len(item) == 1:
                    item = next(iter(item.values()))
                    repaired.append(f"reasoning[{n}]: unwrapped a one-key object")
                text = _as_text(item, f"reasoning[{n}]", repaired, errors)
                if text:
                    steps.append(text)
                elif text == "":
                    repaired.append(f"reasoning[{n}]: dropped an empty step")
        else:
            errors.append(f"reasoning must be a list of strings, got {type(r).__name__}")
        if not steps and isinstance(r, list | str):
            errors.append("reasoning has no steps")

    if "boxes" in obj:
        boxes = _boxes(obj["boxes"], image_size, repaired, errors)
    else:
        repaired.append("missing key 'boxes'; assumed no boxes")
        boxes = []

    answer = _as_text(obj["answer"], "answer", repaired, errors) if "answer" in obj else None
    if answer == "":
        errors.append("answer is empty")
    return ReasonerOutput(
        caption=caption or "",
        reasoning=tuple(steps),
        boxes=tuple(boxes),
        answer=answer or "",
    )


def parse_answer(
    text: str, image_size: tuple[int, int] | None = None, required: Sequence[str] = REQUIRED
) -> ParseResult:
    """Parse a reasoner answer into a typed, validated :class:`ReasonerOutput`.

    Args:
        text: the model's raw output (may hold text, Markdown fences, a truncated object).
        image_size: ``(width, height)`` of the image the answer refers to; lets pixel
            boxes be normalised.
        required: the keys whose absence is an error (the output format's; ``boxes`` is
            never required: a missing list means no boxes).

    Returns:
        A :class:`ParseResult`; ``ok`` is True when the value is complete and valid.
    """
    if not isinstance(text, str):
        return ParseResult(False, None, [], [f"expected text, got {type(text).__name__}"])
    json_text, repaired = extract_json_text(text)
    if json_text is None:
        return ParseResult(False, None, repaired, ["no JSON object found in the answer"])
    try:
        raw, notes = lenient_loads(json_text)
    except JSONSyntaxError as e:
        return ParseResult(False, None, repaired, [f"not parseable as JSON: {e}"])
    repaired = repaired + notes
    errors: list[str] = []
    if not isinstance(raw, dict):
        return ParseResult(
            False, None, repaired, [f"top level must be an object, got {type(raw).__name__}"], raw
        )
    value = _validate(raw, image_size, repaired, errors, required)
    return ParseResult(not errors, value, repaired, errors, raw)
