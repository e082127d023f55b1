"""Raw records: what readers yield and the preprocess transform consumes.

A raw record is a small JSON-able dict describing one future row of the unified schema
(see :mod:`medray.data.schema`), with *paths* to its image and report rather than their
contents, so that listing a dataset is cheap and the heavy work (reading files, decoding,
resizing, hashing) happens in parallel in Ray Data. Keys:

* identity: ``source``, ``original_id``, ``qi`` (question index or None), ``sample_id``;
* where: ``root`` (the source location), ``image`` / ``report`` / ``detection``
  (paths relative to ``root``, or None);
* the unified fields known before decoding: ``split``, ``task``, ``question``, ``answer``,
  ``answer_type``, ``choices``, ``modality``, ``organ``, ``view``, ``labels``, ``language``,
  ``patient_id``, ``study_id``, ``content_type``, ``context``, ``rationale``, ``extra``;
* ``boxes``: ``[{"label", "x1", "y1", "x2", "y2"}]`` with ``box_units`` ``"px"`` (source
  pixels) or ``"norm"`` (fractions of the source image);
* ``reject``: set by a reader when the row itself is unusable (missing field, unreadable
  row); the record is then quarantined with that reason instead of processed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any


class LayoutError(FileNotFoundError):
    """A dataset folder does not have the layout its reader expects; the message says what."""


SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "validation",
    "valid": "validation",
    "validate": "validation",
    "validation": "validation",
    "dev": "validation",
    "test": "test",
}
# Which copy of a duplicate survives: test rows first (official test sets stay whole and
# a duplicate never leaks the same sample into training), then validation, then train.
SPLIT_RANK = {"test": 0, "validation": 1, "train": 2}

MODALITY_ALIASES = {
    "x-ray": "x-ray",
    "xray": "x-ray",
    "x ray": "x-ray",
    "cxr": "x-ray",
    "radiograph": "x-ray",
    "ct": "ct",
    "mri": "mri",
    "mr": "mri",
    "ultrasound": "ultrasound",
    "us": "ultrasound",
}
ORGAN_ALIASES = {"abd": "abdomen", "abdominal": "abdomen", "thorax": "chest", "lung": "chest"}


def sample_id(source: str, original_id: str, question_index: int | None = None) -> str:
    """Stable id of a row: ``<source>:<original id>`` plus ``:q<index>`` for questions."""
    base = f"{source}:{original_id}"
    return base if question_index is None else f"{base}:q{question_index}"


def normalize_split(raw: str) -> str:
    """Map a dataset's split name (``validate``, ``dev``, ``val``, ...) to the schema's."""
    key = str(raw).strip().lower()
    if key not in SPLIT_ALIASES:
        raise ValueError(f"unknown split name {raw!r}; expected one of {sorted(SPLIT_ALIASES)}")
    return SPLIT_ALIASES[key]


def hash_unit(key: str, salt: str = "") -> float:
    """A deterministic number in [0, 1) from a string (SHA-256 based, stable across runs)."""
    digest = hashlib.sha256(f"{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def hash_split(key: str, fractions: Mapping[str, float], salt: str = "") -> str:
    """Deterministic split for a grouping key (patient, image) from ``fractions``.

    Every row sharing ``key`` lands in the same split: this is what keeps a patient's
    (or an image's) rows from straddling train and test.
    """
    u = hash_unit(key, salt)
    total = sum(fractions.values())
    acc = 0.0
    for name in ("train", "validation", "test"):
        acc += fractions.get(name, 0.0) / total
        if u < acc:
            return name
    return "test"


def normalize_modality(raw: Any) -> str | None:
    if raw is None or str(raw).strip() == "":
        return None
    key = str(raw).strip().lower()
    return MODALITY_ALIASES.get(key, key)


def normalize_organ(raw: Any) -> str | None:
    if raw is None or str(raw).strip() == "":
        return None
    key = str(raw).strip().lower()
    return ORGAN_ALIASES.get(key, key)


def normalize_answer_type(raw: Any, answer: str | None = None) -> str | None:
    """``CLOSED `` -> ``closed``; infer from a yes/no answer when the source has none."""
    if raw is not None and str(raw).strip():
        key = str(raw).strip().lower()
        return {"closed": "closed", "open": "open", "choice": "choice"}.get(key, key)
    if answer is not None:
        return "closed" if str(answer).strip().lower() in ("yes", "no") else "open"
    return None


def text(value: Any) -> str | None:
    """A source value as stripped text (numbers become strings); None for empty."""
    if value is None:
        return None
    s = str(value).strip()
    return s or None


def missing(item: Mapping[str, Any], fields: Sequence[str]) -> list[str]:
    """The names in ``fields`` that ``item`` lacks or leaves empty (0 counts as present)."""
    return [
        f
        for f in fields
        if item.get(f) is None or (isinstance(item.get(f), str) and not item[f].strip())
    ]


def record(
    *,
    source: str,
    root: str,
    original_id: str,
    task: str,
    split: str | None,
    qi: int | None = None,
    **fields: Any,
) -> dict[str, Any]:
    """Build a raw record (see the module docstring); ``None`` values are dropped."""
    rec: dict[str, Any] = {
        "source": source,
        "root": root,
        "original_id": str(original_id),
        "qi": qi,
        "sample_id": sample_id(source, str(original_id), qi),
        "task": task,
        "split": split,
    }
    rec.update({k: v for k, v in fields.items() if v is not None})
    return rec


def rejected(
    source: str, root: str, original_id: str, reason: str, raw: Any = None, **extra: Any
) -> dict[str, Any]:
    """A record the reader could not use; it will be quarantined with ``reason``."""
    rec = {
        "source": source,
        "root": root,
        "original_id": str(original_id),
        "sample_id": None,
        "reject": reason,
    }
    if raw is not None:
        rec["raw"] = raw
    rec.update(extra)
    return rec
