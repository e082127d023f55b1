"""What batch inference reads: a preprocessed split or a folder of images + questions.

Both give a Ray Dataset of input rows (unified-schema column names; JSONL rows carry an
``image_path`` instead of ``image`` bytes, read by the actors so that image bytes never
pass through the driver) plus the :func:`medray.eval.predictions.fingerprint` of exactly
those rows, which the predictions manifest records.

JSONL input (one object per line; ``datasets/jsonl.md`` describes the same format)::

    {"id": "q1", "image": "images/a.png", "question": "Is there an effusion?",
     "answer": "yes", "answer_type": "closed", "modality": "x-ray"}

Only ``question`` is required (``answer`` is the reference, optional for plain
inference); ``id`` defaults to ``<file>:<line>``. A line that is not valid JSON or lacks a
question still becomes a row, with ``input_error`` set, so it is reported, not dropped.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from medray.data import io
from medray.eval.predictions import REFERENCE_COLUMNS, fingerprint

REF_NAMES = tuple(c[0] for c in REFERENCE_COLUMNS)
JSONL_FIELDS = ("answer_type", "modality", "organ", "content_type", "language")


class InputError(ValueError):
    """The input of batch inference is missing, empty or malformed."""


@dataclass(frozen=True)
class InputRows:
    """A Ray Dataset of input rows, and what the manifest says about them."""

    dataset: Any  # ray.data.Dataset
    location: str  # the dataset location recorded in the manifest
    split: str
    n_rows: int
    fingerprint: str


IMAGE_COLUMNS = ("image", "image_width", "image_height")


def preprocessed_rows(
    location: str,
    split: str,
    tasks: Sequence[str],
    limit: int = 0,
    validate: bool = True,
    columns: Sequence[str] = IMAGE_COLUMNS,
) -> InputRows:
    """The rows of one split of a preprocessed output (``jobs.preprocess``).

    Args:
        location: the committed output folder or URI.
        split: train | validation | test.
        tasks: keep rows of these tasks (e.g. ``("vqa",)``).
        limit: keep the first ``limit`` rows by ``sample_id`` (0: all).
        validate: check every batch against the schema's value rules while reading.
        columns: the input columns read besides the reference ones and ``language`` (the
            images for the reasoner; findings, impression, rationale for text models).

    Raises:
        InputError: no rows of that split and tasks.
    """
    from medray.data.output import read_ray_dataset, read_table

    ids = read_table(location, split, columns=["sample_id", "task", "question", "answer"])
    keep = set(tasks)
    rows = [r for r in ids.to_pylist() if r["task"] in keep]
    rows.sort(key=lambda r: r["sample_id"])
    if limit:
        rows = rows[:limit]
    if not rows:
        raise InputError(
            f"{location}: no rows of split {split!r} with task in {sorted(keep)}: "
            "check input.split / input.tasks, or run jobs.preprocess on the data first"
        )
    fp = fingerprint(
        [r["sample_id"] for r in rows], [r["question"] for r in rows], [r["answer"] for r in rows]
    )
    wanted = {r["sample_id"] for r in rows}
    ds = read_ray_dataset(location, split, validate=validate)
    cols = list(dict.fromkeys([*REF_NAMES, *columns, "language"]))
    ds = ds.select_columns(cols)
    if limit:
        ds = ds.filter(lambda r: r["sample_id"] in wanted)
    else:  # no id set shipped to every task when the whole split is read
        ds = ds.filter(lambda r: r["task"] in keep)
    return InputRows(ds, location, split, len(rows), fp)


def jsonl_records(path: str, split: str, source: str, image_root: str = "") -> list[dict]:
    """Rows from one ``.jsonl`` file or every ``.jsonl`` file of a folder (sorted).

    Raises:
        InputError: no such file or folder, no ``.jsonl`` files, duplicate ids.
    """
    if io.is_file(path):
        folder, files = path.rsplit("/", 1)[0] if "/" in path else ".", [path]
    elif io.is_dir(path):
        folder = path
        files = sorted(f for f in io.list_files(path, recursive=False) if f.endswith(".jsonl"))
        if not files:
            raise InputError(f"{path}: no .jsonl files in this folder")
    else:
        raise InputError(f"{path}: no such file or folder")
    root = io.resolve_location(image_root) if image_root else folder
    rows: list[dict[str, Any]] = []
    for loc in files:
        name = loc.rsplit("/", 1)[-1]
        for lineno, line in enumerate(io.read_text(loc).splitlines(), start=1):
            if not line.strip():
                continue
            row: dict[str, Any] = {n: None for n in REF_NAMES}
            row.update(source=source, split=split, task="vqa", image_path=None, input_error="")
            row["sample_id"] = f"{name}:{lineno}"
            try:
                item = json.loads(line)
            except ValueError as e:
                row["input_error"] = f"input: line {lineno} of {name} is not JSON: {e}"
                rows.append(row)
                continue
            if not isinstance(item, dict):
                row["input_error"] = f"input: line {lineno} of {name} is not a JSON object"
                rows.append(row)
                continue
            if item.get("id") is not None:
                row["sample_id"] = str(item["id"])
            row["question"] = _text(item.get("question"))
            row["answer"] = _text(item.get("answer"))
            for k in JSONL_FIELDS:
                row[k] = _text(item.get(k))
            for k in ("choices", "labels"):
                v = item.get(k)
                row[k] = [str(x) for x in v] if isinstance(v, list) else None
            if isinstance(item.get("boxes"), list):
                row["boxes"] = item["boxes"]
            if row["choices"] and not row["answer_type"]:
                row["answer_type"] = "choice"
            image = _text(item.get("image"))
            if image:
                row["image_path"] = (
                    image if io.is_uri(image) or image.startswith("/") else
                    io.join(root, posixpath.normpath(image))
                )  # fmt: skip
            if not row["question"]:
                row["input_error"] = f"input: line {lineno} of {name} has no question"
            elif not image:
                row["task"] = "mcq" if row["choices"] else "vqa"
            rows.append(row)
    seen: set[str] = set()
    for r in rows:
        if r["sample_id"] in seen:
            raise InputError(f"{path}: id {r['sample_id']!r} appears more than once")
        seen.add(r["sample_id"])
    return rows


def jsonl_rows(
    path: str, split: str, source: str = "jsonl", image_root: str = "", limit: int = 0
) -> InputRows:
    """A Ray Dataset over :func:`jsonl_records` (images are read by the actors)."""
    import ray

    rows = sorted(jsonl_records(path, split, source, image_root), key=lambda r: r["sample_id"])
    if limit:
        rows = rows[:limit]
    if not rows:
        raise InputError(f"{path}: no rows")
    fp = fingerprint(
        [r["sample_id"] for r in rows], [r["question"] for r in rows], [r["answer"] for r in rows]
    )
    for r in rows:  # Arrow needs one type per column: boxes as JSON text until the actor
        r["boxes"] = json.dumps(r["boxes"]) if r["boxes"] is not None else None
    return InputRows(ray.data.from_items(rows), io.resolve_location(path), split, len(rows), fp)


def _text(v: Any) -> str | None:
    if v is None:
        return None
    s = str(v).strip()
    return s or None
