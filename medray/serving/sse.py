"""The Server-Sent Events wire format of ``/v1/analyze``: written and read here only.

The gateway writes each event with :func:`format_event`; every client in the code base
(``medray analyze``, the demo, ``medray serve up``'s check, the tests) reads a stream with
:func:`read_events`, so the two sides cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any


def format_event(event: str, data: Any) -> str:
    """One SSE event: its name and its JSON data, ended by a blank line."""
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


def read_events(lines: Iterable[str]) -> Iterator[tuple[str, Any]]:
    """(event, data) for each Server-Sent Event in ``lines`` (``data`` parsed as JSON)."""
    event, data = "message", []
    for line in lines:
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip(" "))
    if data:
        yield event, json.loads("\n".join(data))
