"""Search filters as a person types them, matched to the values a collection holds.

Milvus compares strings exactly, so ``modality=CT`` found nothing when the index stores
``ct``, and ``labels=effusion`` nothing when it stores ``Pleural Effusion``. ``resolve``
maps each value the user gave to the stored values it means:

1. the stored values equal to it ignoring case (``CT`` -> ``ct``), else
2. the stored values that contain it as a whole word, ignoring case
   (``effusion`` -> ``Pleural Effusion``).

A value that matches nothing stays as given (the search then finds nothing, as before);
``unmatched`` names such values so that a caller can say which values exist instead.
``parse`` turns ``FIELD=VALUE`` items into the filter mapping the stores take.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Rows read to list the values of a collection's fields (Milvus' largest query window).
SCAN_LIMIT = 16384


class FilterError(ValueError):
    """A filter item is malformed or names values the collection does not hold."""


def parse(items: Iterable[str]) -> dict[str, list[str]]:
    """``["labels=effusion", "modality=CT"]`` -> ``{"labels": ["effusion"], "modality": ["CT"]}``.

    Raises:
        FilterError: an item is not ``FIELD=VALUE``.
    """
    out: dict[str, list[str]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key or not value:
            raise FilterError(f"{item!r} is not FIELD=VALUE (e.g. modality=x-ray)")
        out.setdefault(key, []).append(value)
    return out


def distinct_values(
    client, collection: str, fields: Sequence[str], limit: int = SCAN_LIMIT
) -> tuple[dict[str, list[str]], bool]:
    """The values each of ``fields`` takes in ``collection`` (array fields: their items).

    Returns:
        ``({field: sorted values}, complete)``; ``complete`` is False when the collection
        has more than ``limit`` rows and only the first ``limit`` were read.
    """
    rows = client.query(collection, filter="", output_fields=list(fields), limit=limit)
    seen: dict[str, set[str]] = {f: set() for f in fields}
    for row in rows:
        for f in fields:
            v = row.get(f)
            items = v if isinstance(v, list | tuple) else [v]
            seen[f].update(str(x) for x in items if x not in (None, ""))
    return {f: sorted(v, key=str.lower) for f, v in seen.items()}, len(rows) < limit


def _matches(value: str, known: Sequence[str]) -> list[str]:
    exact = [k for k in known if k.casefold() == value.casefold()]
    if exact:
        return exact
    word = re.compile(rf"(?<![\w]){re.escape(value)}(?![\w])", re.IGNORECASE)
    return [k for k in known if word.search(k)]


def resolve(
    filters: Mapping[str, Any] | None, known: Mapping[str, Sequence[str]]
) -> dict[str, Any]:
    """Each filter value replaced by the stored values it means (see the module doc).

    Fields not in ``known`` (and non-string values) are passed through unchanged.
    """
    out: dict[str, Any] = {}
    for field, value in (filters or {}).items():
        if field not in known:
            out[field] = value
            continue
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        resolved: list[Any] = []
        for v in values:
            found = _matches(v, known[field]) if isinstance(v, str) else []
            resolved += [x for x in (found or [v]) if x not in resolved]
        out[field] = (
            resolved if isinstance(value, list | tuple | set) or len(resolved) > 1 else resolved[0]
        )
    return out


def unmatched(
    filters: Mapping[str, Any] | None, known: Mapping[str, Sequence[str]]
) -> dict[str, list[str]]:
    """Values of ``filters`` that match no stored value of their field: field -> values."""
    out: dict[str, list[str]] = {}
    for field, value in (filters or {}).items():
        if field not in known:
            continue
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        bad = [v for v in values if isinstance(v, str) and not _matches(v, known[field])]
        if bad:
            out[field] = bad
    return out


def describe(
    known: Mapping[str, Sequence[str]], complete: bool = True, width: int = 8
) -> list[str]:
    """Lines ``field: v1, v2, ...`` for help texts and errors."""
    lines = []
    for field, values in known.items():
        shown = ", ".join(values[:width]) + (
            f", ... ({len(values)} in all)" if len(values) > width else ""
        )
        lines.append(f"{field}: {shown or '(no values)'}")
    if not complete:
        lines.append(f"(values of the first {SCAN_LIMIT} rows)")
    return lines
