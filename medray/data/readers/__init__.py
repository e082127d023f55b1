"""Readers: one small generator per on-disk layout, yielding raw records.

Every reader has the signature ``reader(spec, root, split, filtered) -> Iterator[dict]``
(see :mod:`medray.data.records` for the record keys): ``spec`` is the source's
:class:`~medray.data.config.SourceSpec`, ``root`` its resolved location, ``split`` the
split settings, and ``filtered`` a Counter the reader bumps for rows it drops on purpose
(language or view filters). Readers never decode images; a row they cannot use is
yielded as a *rejected* record so that it is quarantined, never silently dropped.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from medray.data.config import SourceSpec, SplitSettings
from medray.data.readers.jsonl import read_jsonl
from medray.data.readers.mimic_cxr import read_mimic_cxr
from medray.data.readers.slake import read_slake
from medray.data.readers.text_qa import read_medmcqa, read_pubmedqa
from medray.data.readers.vqa_rad import read_vqa_rad
from medray.data.records import LayoutError

Reader = Callable[[SourceSpec, str, SplitSettings, Counter], Iterator[dict[str, Any]]]

READERS: dict[str, Reader] = {
    "mimic-cxr": read_mimic_cxr,
    "slake": read_slake,
    "vqa-rad": read_vqa_rad,
    "medmcqa": read_medmcqa,
    "pubmedqa": read_pubmedqa,
    "jsonl": read_jsonl,
}


def read_source(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter | None = None
) -> Iterator[dict[str, Any]]:
    """Raw records of one source (honouring ``spec.limit``)."""
    filtered = filtered if filtered is not None else Counter()
    for i, rec in enumerate(READERS[spec.kind](spec, root, split, filtered)):
        if spec.limit and i >= spec.limit:
            return
        yield rec


__all__ = ["READERS", "LayoutError", "read_source"]
