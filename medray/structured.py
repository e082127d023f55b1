"""The structured-output parser: THE one place that reads a reasoner's JSON answer.

The reasoner answers with one JSON object::

    {"caption": str, "reasoning": [str, ...], "boxes": [[x1, y1, x2, y2], ...], "answer": str}

with boxes normalised to ``[0, 1]`` (``x1 <= x2``, ``y1 <= y2``). Models produce that
imperfectly, so :func:`parse_answer` extracts the first JSON object from any surrounding
text or Markdown fences, parses it leniently, repairs what can be repaired and validates
the rest, reporting precisely what it did:

    >>> r = parse_answer('```json\\n{"caption": "cxr", "reasoning": "a. b", "boxes": [], "answer": "yes",}\\n```')
    >>> r.ok, r.value.reasoning, r.repaired
    (True, ('a.', 'b'), ['removed a trailing comma', "split string 'reasoning' into 2 steps"])

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

:class:`StepStreamer` turns a growing token stream of that JSON into step events (the
caption, each ``reasoning`` item as soon as its string closes, the answer), which the
serving path uses for step-wise streaming; ``finish()`` returns the full parse.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "FIELDS",
    "ParseResult",
    "ReasonerOutput",
    "StepEvent",
    "StepStreamer",
    "extract_json_text",
    "loads_lenient",
    "parse_answer",
]

FIELDS = ("caption", "reasoning", "boxes", "answer")
REQUIRED = ("caption", "reasoning", "answer")  # the full format's required keys

# Names models use for our fields (lower-cased, spaces/dashes as underscores).
_ALIASES = {
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
# Extraction
# ---------------------------------------------------------------------------

_FENCE = re.compile(r"```[ \t]*(?:json|JSON|javascript|js)?[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)


def extract_json_text(text: str) -> tuple[str | None, list[str]]:
    """Cut the first JSON object out of ``text``.

    Prefers the content of the first Markdown code fence that holds a ``{``. Scans from
    the first ``{`` to its matching ``}`` (quote-aware, single or double quotes); a
    truncated object runs to the end of the text.

    Returns:
        ``(json_text or None, notes)``, notes describing what was cut away.
    """
    notes: list[str] = []
    body = text
    m = _FENCE.search(text)
    if m and "{" in m.group(1):
        body = m.group(1)
        notes.append("removed Markdown code fences")
    start = body.find("{")
    if start < 0:
        return None, notes
    depth = 0
    quote: str | None = None
    escape = False
    end = len(body)
    for i in range(start, len(body)):
        ch = body[i]
        if quote:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == quote:
                quote = None
            continue
        if ch in "\"'":
            # An apostrophe inside a word (don't) is text, not a quote, outside strings.
            if ch == "'" and i > 0 and body[i - 1].isalnum():
                continue
            quote = ch
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
            if depth == 0:
                end = i + 1
                break
    before, after = body[:start].strip(), body[end:].strip()
    if before or after:
        notes.append("ignored text around the JSON object")
    return body[start:end], notes


# ---------------------------------------------------------------------------
# Lenient JSON parsing
# ---------------------------------------------------------------------------


_NO_VALUE = object()


class _Truncated(Exception):
    """The text ended inside a value; ``partial`` is what was read of it."""

    def __init__(self, partial: Any = _NO_VALUE) -> None:
        super().__init__("truncated")
        self.partial = partial


class _Syntax(Exception):
    """Unrecoverable syntax error; the message says where."""


_NUMBER = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_BARE = re.compile(r"[A-Za-z_$][\w$-]*")
_LITERALS = {
    "true": True,
    "false": False,
    "null": None,
    "True": True,
    "False": False,
    "None": None,
}
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


class _LenientParser:
    """Recursive-descent JSON parser that accepts common model mistakes and notes them."""

    def __init__(self, text: str) -> None:
        self.s = text
        self.i = 0
        self.notes: list[str] = []
        self.closers: list[str] = []

    def note(self, msg: str) -> None:
        if msg not in self.notes:
            self.notes.append(msg)

    def ws(self) -> None:
        while self.i < len(self.s):
            ch = self.s[self.i]
            if ch.isspace():
                self.i += 1
            elif self.s.startswith("//", self.i):
                nl = self.s.find("\n", self.i)
                self.i = len(self.s) if nl < 0 else nl + 1
                self.note("removed comments")
            else:
                break

    def peek(self) -> str:
        self.ws()
        if self.i >= len(self.s):
            raise _Truncated
        return self.s[self.i]

    def value(self) -> Any:
        ch = self.peek()
        if ch == "{":
            return self.obj()
        if ch == "[":
            return self.arr()
        if ch in "\"'":
            return self.string()
        m = _NUMBER.match(self.s, self.i)
        if m:
            self.i = m.end()
            txt = m.group(0)
            return float(txt) if any(c in txt for c in ".eE") else int(txt)
        m = _BARE.match(self.s, self.i)
        if m and m.group(0) in _LITERALS:
            word = m.group(0)
            self.i = m.end()
            if word not in ("true", "false", "null"):
                self.note(f"converted Python literal {word} to JSON")
            return _LITERALS[word]
        if m and m.end() == len(self.s) and any(w.startswith(m.group(0)) for w in _LITERALS):
            self.i = m.end()
            raise _Truncated
        raise _Syntax(f"unexpected character {ch!r} at offset {self.i}")

    def string(self) -> str:
        quote = self.s[self.i]
        if quote == "'":
            self.note("converted single-quoted strings")
        self.i += 1
        out: list[str] = []
        while True:
            if self.i >= len(self.s):
                self.closers.append(quote)
                raise _Truncated("".join(out))
            ch = self.s[self.i]
            if ch == "\\" and self.i + 1 < len(self.s):
                nxt = self.s[self.i + 1]
                if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", self.s[self.i + 2 : self.i + 6]):
                    out.append(chr(int(self.s[self.i + 2 : self.i + 6], 16)))
                    self.i += 6
                    continue
                out.append(_ESCAPES.get(nxt, nxt))
                self.i += 2
                continue
            if ch == quote:
                self.i += 1
                return "".join(out)
            out.append(ch)
            self.i += 1

    def key(self) -> str:
        ch = self.peek()
        if ch in "\"'":
            return self.string()
        m = _BARE.match(self.s, self.i)
        if m:
            self.i = m.end()
            self.note("quoted unquoted keys")
            return m.group(0)
        raise _Syntax(f"expected a key at offset {self.i}, found {ch!r}")

    def obj(self) -> dict[str, Any]:
        self.i += 1  # {
        out: dict[str, Any] = {}
        try:
            while True:
                ch = self.peek()
                if ch == "}":
                    self.i += 1
                    return out
                if ch == ",":
                    self.i += 1
                    self.note("removed a stray comma")
                    continue
                try:
                    k = self.key()
                except _Truncated:
                    raise _Truncated from None  # a cut-off key is dropped
                if self.peek() != ":":
                    raise _Syntax(f"expected ':' after key {k!r} at offset {self.i}")
                self.i += 1
                try:
                    out[k] = self.value()
                except _Truncated as t:
                    if t.partial is not _NO_VALUE:
                        out[k] = t.partial
                    raise
                ch = self.peek()
                if ch == ",":
                    self.i += 1
                    if self.peek() == "}":
                        self.note("removed a trailing comma")
                elif ch != "}":
                    raise _Syntax(f"expected ',' or '}}' at offset {self.i}, found {ch!r}")
        except _Truncated:
            self.closers.append("}")
            raise _Truncated(out) from None

    def arr(self) -> list[Any]:
        self.i += 1  # [
        out: list[Any] = []
        try:
            while True:
                ch = self.peek()
                if ch == "]":
                    self.i += 1
                    return out
                try:
                    out.append(self.value())
                except _Truncated as t:
                    if t.partial is not _NO_VALUE:
                        out.append(t.partial)
                    raise
                ch = self.peek()
                if ch == ",":
                    self.i += 1
                    if self.peek() == "]":
                        self.note("removed a trailing comma")
                elif ch != "]":
                    raise _Syntax(f"expected ',' or ']' at offset {self.i}, found {ch!r}")
        except _Truncated:
            self.closers.append("]")
            raise _Truncated(out) from None


def _lenient_loads(text: str) -> tuple[Any, list[str]]:
    """Parse ``text`` leniently; returns ``(value, notes)`` or raises ``_Syntax``."""
    try:
        return json.loads(text), []
    except ValueError:
        pass
    p = _LenientParser(text)
    try:
        value = p.value()
    except _Truncated as t:
        if t.partial is _NO_VALUE:
            raise _Syntax("the answer ends before any value") from None
        value = t.partial
        quotes = [c for c in p.closers if c in "\"'"]
        if quotes:
            p.note("closed an unterminated string")
        closers = "".join(c for c in p.closers if c in "]}")
        p.note(f"added missing closing {closers!r} at the end (truncated answer)")
    return value, p.notes


# ---------------------------------------------------------------------------
# Validation
# ---------------------------------------------------------------------------

_SENTENCE = re.compile(r"(?<=[.!?])\s+(?=\S)")
_ENUM = re.compile(r"^\s*(?:\d+[.)]|[-*•]|step\s*\d+\s*[:.)-])\s*", re.IGNORECASE)


def _split_steps(text: str) -> list[str]:
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
        canon = _ALIASES.get(norm)
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
            steps = _split_steps(r)
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
        raw, notes = _lenient_loads(json_text)
    except _Syntax as e:
        return ParseResult(False, None, repaired, [f"not parseable as JSON: {e}"])
    repaired = repaired + notes
    errors: list[str] = []
    if not isinstance(raw, dict):
        return ParseResult(
            False, None, repaired, [f"top level must be an object, got {type(raw).__name__}"], raw
        )
    value = _validate(raw, image_size, repaired, errors, required)
    return ParseResult(not errors, value, repaired, errors, raw)


# ---------------------------------------------------------------------------
# Streaming
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StepEvent:
    """One event from :class:`StepStreamer`.

    Attributes:
        kind: ``caption``, ``step`` (one reasoning item) or ``answer``.
        text: the decoded string.
        index: the step number (0-based) for ``step`` events, else -1.
    """

    kind: Literal["caption", "step", "answer"]
    text: str
    index: int = -1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        d: dict[str, Any] = {"kind": self.kind, "text": self.text}
        if self.kind == "step":
            d["index"] = self.index
        return d


class StepStreamer:
    """Turn a growing token stream of the reasoner's JSON into step events.

    Feed text chunks as they arrive; each call returns the events completed by that
    chunk: the caption and the answer when their strings close, each ``reasoning``
    item as soon as its string closes (a string ``reasoning`` is split into steps when
    it closes). Quote-aware and tolerant of single quotes and text before the object.
    ``finish()`` parses the whole text with :func:`parse_answer`.

    Example:
        >>> s = StepStreamer()
        >>> [e.text for e in s.feed('{"caption": "cxr", "reasoning": ["lungs clear"')]
        ['cxr', 'lungs clear']
    """

    def __init__(self, image_size: tuple[int, int] | None = None) -> None:
        self.image_size = image_size
        self._text: list[str] = []
        self._stack: list[str] = []  # '{' or '['
        self._expect_key: list[bool] = []  # per stack level: next string is a key
        self._key: str | None = None  # current key of the top-level object
        self._quote: str | None = None
        self._escape = False
        self._buf: list[str] = []
        self._started = False
        self._done = False
        self._steps = 0
        self._prev = ""

    @property
    def text(self) -> str:
        """Everything fed so far."""
        return "".join(self._text)

    @property
    def complete(self) -> bool:
        """True once the top-level object has closed."""
        return self._done

    def feed(self, chunk: str) -> list[StepEvent]:
        """Add a chunk of model output; return the events it completed."""
        self._text.append(chunk)
        events: list[StepEvent] = []
        for ch in chunk:
            if self._done:
                break
            self._char(ch, events)
            self._prev = ch
        return events

    def finish(self) -> ParseResult:
        """Parse everything fed so far (repairing a truncated tail)."""
        return parse_answer(self.text, self.image_size)

    def _char(self, ch: str, events: list[StepEvent]) -> None:
        if not self._started:
            if ch == "{":
                self._started = True
                self._stack.append("{")
                self._expect_key.append(True)
            return
        if self._quote:
            if self._escape:
                self._escape = False
                self._buf.append("\\" + ch)
            elif ch == "\\":
                self._escape = True
            elif ch == self._quote:
                self._quote = None
                self._string_closed(_decode("".join(self._buf)), events)
            else:
                self._buf.append(ch)
            return
        if ch in "\"'":
            if ch == "'" and self._prev.isalnum():
                return
            self._quote = ch
            self._buf = []
        elif ch in "{[":
            self._stack.append(ch)
            self._expect_key.append(ch == "{")
        elif ch in "}]":
            if self._stack:
                self._stack.pop()
                self._expect_key.pop()
            if not self._stack:
                self._done = True
            elif len(self._stack) == 1:
                self._key = None
        elif ch == ":":
            if self._expect_key:
                self._expect_key[-1] = False
        elif ch == ",":
            if self._stack and self._stack[-1] == "{":
                self._expect_key[-1] = True
            if len(self._stack) == 1:
                self._key = None

    def _string_closed(self, s: str, events: list[StepEvent]) -> None:
        depth = len(self._stack)
        if depth == 1 and self._expect_key[-1]:
            self._key = _ALIASES.get(re.sub(r"[\s-]+", "_", s.strip().lower()))
            return
        if depth == 1 and self._key in ("caption", "answer"):
            events.append(StepEvent(self._key, s.strip()))
        elif depth == 1 and self._key == "reasoning":
            for part in _split_steps(s):
                events.append(StepEvent("step", part, self._steps))
                self._steps += 1
        elif depth == 2 and self._key == "reasoning" and self._stack[-1] == "[" and s.strip():
            events.append(StepEvent("step", s.strip(), self._steps))
            self._steps += 1


def _decode(raw: str) -> str:
    """Decode the escapes kept in a streamed string body."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        ch = raw[i]
        if ch == "\\" and i + 1 < len(raw):
            nxt = raw[i + 1]
            if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", raw[i + 2 : i + 6]):
                out.append(chr(int(raw[i + 2 : i + 6], 16)))
                i += 6
                continue
            out.append(_ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def loads_lenient(text: str) -> tuple[Any, list[str]]:
    """The first JSON value in ``text``, parsed with the same repairs as
    :func:`parse_answer` but without the reasoner schema (for other structured outputs,
    e.g. the agent's).

    Returns:
        ``(value, notes)``; ``value`` is None when no JSON object could be read, and the
        notes then say why.
    """
    json_text, notes = extract_json_text(text or "")
    if json_text is None:
        return None, [*notes, "no JSON object in the text"]
    try:
        value, more = _lenient_loads(json_text)
    except _Syntax as e:
        return None, [*notes, f"unreadable JSON: {e}"]
    return value, [*notes, *more]
