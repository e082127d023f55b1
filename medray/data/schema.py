"""The unified sample schema: the one contract between preprocessing and everything after it.

Every preprocessed output (``jobs/preprocess.py``) is Parquet in exactly this schema, and
every later component (CLIP training, VLM SFT/GRPO, indexing, batch inference, serving)
reads it through :func:`medray.data.output.read_table` or
:func:`medray.data.output.read_ray_dataset`, which check it again. The field-by-field
documentation lives in ``datasets/SCHEMA.md``; keep the two in step (a unit test compares
them).

Rows:

* ``task == "vqa"``: one row per (image, question);
* ``task == "report"``: one row per image, with ``findings`` and/or ``impression``;
* ``task == "mcq"``: one row per text multiple-choice question (``image`` may be null).

:func:`row_errors` checks one row's values; :func:`validate_table` checks a whole table
(types, then values) and raises :class:`SchemaError` naming the row and the problem.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa

SCHEMA_VERSION = "1"

SPLITS = ("train", "validation", "test")
TASKS = ("vqa", "report", "mcq")
ANSWER_TYPES = ("closed", "open", "choice")
IMAGE_FORMATS = ("jpeg", "png")

BOX_TYPE = pa.struct(
    [
        pa.field("label", pa.string()),
        pa.field("x1", pa.float32()),
        pa.field("y1", pa.float32()),
        pa.field("x2", pa.float32()),
        pa.field("y2", pa.float32()),
    ]
)

# (name, type, nullable, one-line description); SCHEMA.md documents each at length.
FIELDS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("sample_id", pa.string(), False, "stable id: <source>:<original_id>[:q<index>]"),
    ("source", pa.string(), False, "source name from the preprocess config (e.g. vqa-rad)"),
    ("original_id", pa.string(), False, "the record's id in its source dataset"),
    ("split", pa.string(), False, "train | validation | test"),
    ("task", pa.string(), False, "vqa | report | mcq"),
    ("image", pa.binary(), True, "encoded image at the target size; null for text-only rows"),
    ("image_format", pa.string(), True, "jpeg | png; null iff image is null"),
    ("image_sha256", pa.string(), True, "hex SHA-256 of the image bytes (the content hash)"),
    ("image_width", pa.int32(), True, "width of the stored image in pixels"),
    ("image_height", pa.int32(), True, "height of the stored image in pixels"),
    ("source_width", pa.int32(), True, "width of the original image in pixels"),
    ("source_height", pa.int32(), True, "height of the original image in pixels"),
    ("modality", pa.string(), True, "x-ray | ct | mri | ... (lower case)"),
    ("organ", pa.string(), True, "body part / organ system (lower case)"),
    ("view", pa.string(), True, "radiographic view (PA, AP, LATERAL, ...) where known"),
    ("question", pa.string(), True, "question text (vqa, mcq)"),
    ("answer", pa.string(), True, "reference answer text (vqa, mcq)"),
    ("answer_type", pa.string(), True, "closed | open | choice"),
    ("choices", pa.list_(pa.string()), True, "answer options (choice questions)"),
    ("context", pa.string(), True, "supporting text for text QA (e.g. PubMedQA abstract)"),
    ("rationale", pa.string(), True, "explanation of the answer where the source has one"),
    ("findings", pa.string(), True, "report FINDINGS section (report rows)"),
    ("impression", pa.string(), True, "report IMPRESSION section (report rows)"),
    ("labels", pa.list_(pa.string()), True, "positive findings, CheXpert-style names"),
    ("boxes", pa.list_(BOX_TYPE), True, "boxes, normalised [0,1] coords of the stored image"),
    ("language", pa.string(), True, "ISO 639-1 language of the text (en, zh, ...)"),
    ("patient_id", pa.string(), True, "patient id where the source has one"),
    ("study_id", pa.string(), True, "study id where the source has one"),
    ("content_type", pa.string(), True, "question category (modality, organ, presence, ...)"),
    ("extra", pa.string(), True, "JSON object of source-specific fields kept for traceability"),
)

SCHEMA = pa.schema(
    [pa.field(name, tp, nullable=nullable) for name, tp, nullable, _ in FIELDS],
    metadata={b"medray.schema": b"unified", b"medray.schema_version": SCHEMA_VERSION.encode()},
)
COLUMNS = tuple(SCHEMA.names)

# What a quarantined record looks like (quarantine/*.parquet and quarantine.jsonl).
QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("original_id", pa.string(), nullable=False),
        pa.field("sample_id", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # read | image | report | validate
        pa.field("reason", pa.string(), nullable=False),
        pa.field("path", pa.string()),  # the offending file, relative to the source root
        pa.field("record", pa.string()),  # the raw record as JSON (no pixels)
    ],
    metadata={b"medray.schema": b"quarantine", b"medray.schema_version": SCHEMA_VERSION.encode()},
)


class SchemaError(ValueError):
    """Data does not follow the unified schema; the message names the row and the problem."""


def row_errors(row: Mapping[str, Any]) -> list[str]:
    """Every way ``row`` breaks the schema's value rules (empty list: valid).

    ``row`` is one sample as a plain dict (``image`` may be bytes or just truthy).
    Types are not checked here (see :func:`validate_table`); this checks what types
    cannot: allowed values, required fields per task, box geometry.
    """
    errs: list[str] = type_errors(row)
    if errs:  # values of the wrong type cannot be checked further (nor stored)
        return errs
    for name in ("sample_id", "source", "original_id", "split", "task"):
        if not row.get(name):
            errs.append(f"missing field: {name}")
    split, task = row.get("split"), row.get("task")
    if split and split not in SPLITS:
        errs.append(f"split {split!r} is not one of {list(SPLITS)}")
    if task and task not in TASKS:
        errs.append(f"task {task!r} is not one of {list(TASKS)}")
    has_image = row.get("image") is not None
    if has_image:
        for name in ("image_format", "image_sha256", "image_width", "image_height"):
            if row.get(name) in (None, ""):
                errs.append(f"missing field: {name} (the row has an image)")
        fmt = row.get("image_format")
        if fmt is not None and fmt not in IMAGE_FORMATS:
            errs.append(f"image_format {fmt!r} is not one of {list(IMAGE_FORMATS)}")
        for name in ("image_width", "image_height"):
            v = row.get(name)
            if v is not None and v <= 0:
                errs.append(f"{name} must be positive, got {v}")
        sha = row.get("image_sha256")
        if sha is not None and (len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha)):
            errs.append("image_sha256 must be 64 lower-case hex digits")
    elif row.get("image_sha256") is not None or row.get("image_format") is not None:
        errs.append("image_sha256/image_format set but image is null")

    answer_type = row.get("answer_type")
    if answer_type is not None and answer_type not in ANSWER_TYPES:
        errs.append(f"answer_type {answer_type!r} is not one of {list(ANSWER_TYPES)}")
    choices = row.get("choices")
    if task in ("vqa", "mcq"):
        for name in ("question", "answer", "answer_type"):
            if not row.get(name):
                errs.append(f"missing field: {name}")
    if task == "vqa" and not has_image:
        errs.append("missing field: image (vqa rows need an image)")
    if task == "mcq" and not choices:
        errs.append("missing field: choices (mcq rows need answer options)")
    if answer_type == "choice":
        if not choices or len(choices) < 2:
            errs.append("answer_type 'choice' needs at least two choices")
        elif row.get("answer") and row["answer"] not in choices:
            errs.append("answer is not one of the choices")
    if task == "report":
        if not has_image:
            errs.append("missing field: image (report rows need an image)")
        if not (row.get("findings") or row.get("impression")):
            errs.append("report has neither findings nor impression")
    for i, box in enumerate(row.get("boxes") or ()):
        errs.extend(f"boxes[{i}]: {e}" for e in box_errors(box))
    return errs


_PY_TYPES = {
    pa.string(): str,
    pa.binary(): (bytes, bytearray),
    pa.int32(): int,
}


def type_errors(row: Mapping[str, Any]) -> list[str]:
    """Fields whose Python value cannot be stored as the schema's type."""
    errs = []
    for name, typ, _, _ in FIELDS:
        v = row.get(name)
        if v is None:
            continue
        if typ in _PY_TYPES:
            if not isinstance(v, _PY_TYPES[typ]) or isinstance(v, bool):
                errs.append(f"{name} must be {typ}, got {type(v).__name__}")
        elif name in ("choices", "labels"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                errs.append(f"{name} must be a list of strings")
        elif name == "boxes" and (
            not isinstance(v, list) or not all(isinstance(b, Mapping) for b in v)
        ):
            errs.append("boxes must be a list of {label, x1, y1, x2, y2} objects")
    return errs


def box_errors(box: Mapping[str, Any]) -> list[str]:
    """Problems with one box: label present, coordinates finite, in [0, 1], ordered."""
    errs = []
    if not box.get("label"):
        errs.append("missing label")
    coords = [box.get(k) for k in ("x1", "y1", "x2", "y2")]
    if any(not isinstance(c, int | float) or not math.isfinite(c) for c in coords):
        return [*errs, f"coordinates must be finite numbers, got {coords}"]
    x1, y1, x2, y2 = coords
    if not all(0.0 <= c <= 1.0 for c in coords):
        errs.append(f"coordinates must lie in [0, 1], got {[round(c, 4) for c in coords]}")
    if x2 <= x1 or y2 <= y1:
        errs.append(f"needs x1 < x2 and y1 < y2, got {[round(c, 4) for c in coords]}")
    return errs


def check_schema(schema: pa.Schema, where: str = "table") -> None:
    """Raise :class:`SchemaError` unless ``schema`` has exactly the unified fields and types."""
    names = schema.names
    if list(names) != list(COLUMNS):
        missing = [c for c in COLUMNS if c not in names]
        extra = [c for c in names if c not in COLUMNS]
        raise SchemaError(
            f"{where}: columns differ from the unified schema"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else "")
            + ("" if missing or extra else "; same columns in another order")
        )
    for field in SCHEMA:
        got = schema.field(field.name).type
        if not got.equals(field.type):
            raise SchemaError(
                f"{where}: column {field.name!r} has type {got}, expected {field.type}"
            )


def validate_table(table: pa.Table, where: str = "table") -> None:
    """Check types (exactly :data:`SCHEMA`) and every row's values; raise on the first problem.

    Raises:
        SchemaError: naming the column or the row (by ``sample_id``) and what is wrong.
    """
    check_schema(table.schema, where)
    for field in SCHEMA:
        if not field.nullable and table.column(field.name).null_count:
            raise SchemaError(f"{where}: column {field.name!r} has nulls but is required")
    image_present = table.column("image").is_valid().to_pylist()
    rows = table.drop_columns(["image"]).to_pylist()
    for row, has_image in zip(rows, image_present, strict=True):
        row["image"] = b"" if has_image else None
        errs = row_errors(row)
        if errs:
            raise SchemaError(f"{where}: row {row.get('sample_id')!r}: {'; '.join(errs)}")


def empty_table() -> pa.Table:
    """A zero-row table in the unified schema."""
    return SCHEMA.empty_table()


def table_from_rows(rows: Iterable[Mapping[str, Any]]) -> pa.Table:
    """Build a unified-schema table from dict rows (missing keys become null)."""
    return pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=SCHEMA)
