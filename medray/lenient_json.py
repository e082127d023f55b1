"""Lenient JSON: cut the first JSON object out of model text and parse it with repairs.

What models get wrong in JSON, repaired and noted (Markdown fences and surrounding text,
trailing commas, single-quoted strings, unquoted keys, Python literals, missing closing
quotes / brackets / braces at the end of a truncated answer). The reasoner's schema on top
of it is :mod:`medray.structured`; other structured outputs (the agent's) use
:func:`loads_lenient` directly.
"""

from __future__ import annotations

import json
import re
from typing import Any

__all__ = ["JSONSyntaxError", "extract_json_text", "lenient_loads", "loads_lenient"]

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


class JSONSyntaxError(Exception):
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
ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f"}


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
        raise JSONSyntaxError(f"unexpected character {ch!r} at offset {self.i}")

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
                out.append(ESCAPES.get(nxt, nxt))
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
        raise JSONSyntaxError(f"expected a key at offset {self.i}, found {ch!r}")

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
                    raise JSONSyntaxError(f"expected ':' after key {k!r} at offset {self.i}")
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
                    raise JSONSyntaxError(f"expected ',' or '}}' at offset {self.i}, found {ch!r}")
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
                    raise JSONSyntaxError(f"expected ',' or ']' at offset {self.i}, found {ch!r}")
        except _Truncated:
            self.closers.append("]")
            raise _Truncated(out) from None


def lenient_loads(text: str) -> tuple[Any, list[str]]:
    """Parse ``text`` leniently; returns ``(value, notes)`` or raises ``JSONSyntaxError``."""
    try:
        return json.loads(text), []
    except ValueError:
        pass
    p = _LenientParser(text)
    try:
        value = p.value()
    except _Truncated as t:
        if t.partial is _NO_VALUE:
            raise JSONSyntaxError("the answer ends before any value") from None
        value = t.partial
        quotes = [c for c in p.closers if c in "\"'"]
        if quotes:
            p.note("closed an unterminated string")
        closers = "".join(c for c in p.closers if c in "]}")
        p.note(f"added missing closing {closers!r} at the end (truncated answer)")
    return value, p.notes


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
        value, more = lenient_loads(json_text)
    except JSONSyntaxError as e:
        return None, [*notes, f"unreadable JSON: {e}"]
    return value, [*notes, *more]
