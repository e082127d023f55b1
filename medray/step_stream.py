"""Step-wise streaming of the reasoner's JSON answer: :class:`StepStreamer` turns a growing
token stream into step events (the caption, each ``reasoning`` item as soon as its string
closes, the answer), which the serving path streams; ``finish()`` returns the full parse
(:func:`medray.structured.parse_answer`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from medray.lenient_json import ESCAPES
from medray.structured import ALIASES, ParseResult, parse_answer, split_steps

__all__ = ["StepEvent", "StepStreamer"]


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
            self._key = ALIASES.get(re.sub(r"[\s-]+", "_", s.strip().lower()))
            return
        if depth == 1 and self._key in ("caption", "answer"):
            events.append(StepEvent(self._key, s.strip()))
        elif depth == 1 and self._key == "reasoning":
            for part in split_steps(s):
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
            out.append(ESCAPES.get(nxt, nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)
