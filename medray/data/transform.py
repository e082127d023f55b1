"""The per-record transform of preprocessing: raw record -> unified row or quarantine entry.

:func:`process_record` does everything one record needs (read its image and report,
decode, check, resize, encode, hash, map boxes, validate) and never raises for bad
data: a record that cannot become a valid row comes back as a quarantine entry with a
specific reason. :func:`process_batch` is the Ray Data ``map_batches`` function
(``batch_format="pyarrow"``; input column ``rec`` holds one JSON-encoded raw record per
row) and the single-process benchmark loop calls the same :func:`process_record`, so
both do exactly the same work.

Output rows follow :data:`INTERNAL_SCHEMA`: the unified columns (all nullable, because
quarantine entries leave most of them empty) plus bookkeeping columns starting with
``_`` that the sink strips: ``_reason`` (null for good rows), ``_stage``, ``_path``,
``_raw`` (the record as JSON), ``_dedup_key`` and ``_node`` (where it ran).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from typing import Any

import pyarrow as pa

from medray.data import io
from medray.data.config import ImageSettings
from medray.data.images import ImageRejected, PreparedImage, map_box, prepare_image
from medray.data.reports import findings_impression
from medray.data.schema import COLUMNS, SCHEMA, row_errors

log = logging.getLogger(__name__)

INTERNAL_COLUMNS = ("_reason", "_stage", "_path", "_raw", "_dedup_key", "_node")
INTERNAL_SCHEMA = pa.schema(
    [pa.field(f.name, f.type, nullable=True) for f in SCHEMA]
    + [pa.field(name, pa.string()) for name in INTERNAL_COLUMNS]
)
_PASS = (
    "sample_id",
    "source",
    "original_id",
    "split",
    "task",
    "modality",
    "organ",
    "view",
    "question",
    "answer",
    "answer_type",
    "choices",
    "context",
    "rationale",
    "labels",
    "language",
    "patient_id",
    "study_id",
    "content_type",
)


class InjectedFailure(RuntimeError):
    """Raised on purpose (``fail_at_record``) to test that a failed run leaves no output."""


def _norm_text(s: str | None) -> str:
    return re.sub(r"\s+", " ", s or "").strip().lower()


def dedup_key(row: dict[str, Any]) -> str:
    """Content key of a row: two rows with the same key are duplicates.

    VQA: image content + question text; report: image content; MCQ: question, choices and
    context (+ image content if any). Case and whitespace in text are ignored. The
    answer is not part of the key, so conflicting copies also count as duplicates.
    """
    h = hashlib.sha256()
    parts = [row["task"], row.get("image_sha256") or ""]
    if row["task"] != "report":
        parts.append(_norm_text(row.get("question")))
    if row["task"] == "mcq":
        parts += [_norm_text(c) for c in row.get("choices") or ()]
        parts.append(_norm_text(row.get("context")))
    h.update("\x1f".join(parts).encode())
    return h.hexdigest()


def _raw_json(rec: dict[str, Any]) -> str:
    return json.dumps(
        {k: v for k, v in rec.items() if k not in ("root", "report_root")}, default=str
    )


def quarantine_entry(
    rec: dict[str, Any], stage: str, reason: str, path: str | None = None
) -> dict[str, Any]:
    """An output row that goes to the quarantine, not to the data."""
    return {
        "source": rec.get("source"),
        "original_id": str(rec.get("original_id")),
        "sample_id": rec.get("sample_id"),
        "_reason": reason,
        "_stage": stage,
        "_path": path,
        "_raw": _raw_json(rec),
    }


def _slake_boxes(data: bytes) -> list[dict[str, Any]]:
    """SLAKE ``detection.json``: ``[{label: [x, y, w, h]}, ...]`` in source pixels."""
    items = json.loads(data.decode("utf-8"))
    if not isinstance(items, list):
        raise ValueError("expected a list")
    boxes = []
    for item in items:
        for label, (x, y, w, h) in item.items():
            boxes.append({"label": label, "x1": x, "y1": y, "x2": x + w, "y2": y + h})
    return boxes


def load_image(
    loc: str, rel: str, settings: ImageSettings
) -> tuple[PreparedImage | None, str | None, str | None]:
    """Read and prepare one image: ``(prepared, sha256, None)`` or ``(None, None, reason)``."""
    try:
        data = io.read_bytes(loc)
    except FileNotFoundError:
        return None, None, f"image file missing: {rel}"
    except OSError as e:
        return None, None, f"image file unreadable: {rel}: {e}"
    try:
        img = prepare_image(data, settings)
    except ImageRejected as e:
        return None, None, f"{e}: {rel}"
    return img, hashlib.sha256(img.data).hexdigest(), None


def process_record(
    rec: dict[str, Any],
    settings: ImageSettings,
    fail_at: int = -1,
    cache: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One raw record -> one output row (a unified row, or a quarantine entry).

    ``cache`` (optional, per batch) keeps prepared images by location, so an image asked
    about in several questions is read and decoded once.
    """
    if fail_at >= 0 and rec.get("i") == fail_at:
        raise InjectedFailure(f"injected failure at record {fail_at} (fail_at_record)")
    if rec.get("reject"):
        return quarantine_entry(rec, "read", rec["reject"])
    row: dict[str, Any] = {k: rec.get(k) for k in _PASS}
    root = rec["root"]
    boxes = rec.get("boxes")
    units = rec.get("box_units", "px")

    image_rel = rec.get("image")
    if image_rel:
        loc = io.join(root, image_rel)
        # Several questions share an image: decode it once per batch.
        got = cache.get(loc) if cache is not None else None
        if got is None:
            got = load_image(loc, image_rel, settings)
            if cache is not None:
                cache[loc] = got
        img, sha, why = got
        if why is not None:
            return quarantine_entry(rec, "image", why, image_rel)
        row.update(
            image=img.data,
            image_format=img.format,
            image_sha256=sha,
            image_width=img.width,
            image_height=img.height,
            source_width=img.source_width,
            source_height=img.source_height,
        )
        det = rec.get("detection")
        if det and not boxes:
            try:
                boxes, units = _slake_boxes(io.read_bytes(io.join(root, det))), "px"
            except FileNotFoundError:
                boxes = None  # detection.json is optional
            except (ValueError, TypeError, AttributeError, OSError) as e:
                return quarantine_entry(rec, "image", f"detection file unreadable: {det}: {e}", det)
        if boxes:
            try:
                row["boxes"] = [map_box(b, img, units) for b in boxes]
            except (KeyError, TypeError, ValueError) as e:
                return quarantine_entry(
                    rec, "validate", f"schema violation: boxes: malformed box ({e})"
                )

    report_rel = rec.get("report")
    if report_rel:
        loc = io.join(rec.get("report_root") or root, report_rel)
        try:
            report = io.read_bytes(loc).decode("utf-8")
        except FileNotFoundError:
            return quarantine_entry(rec, "report", f"report file missing: {report_rel}", report_rel)
        except (OSError, UnicodeDecodeError) as e:
            return quarantine_entry(
                rec, "report", f"report file unreadable: {report_rel}: {e}", report_rel
            )
        row["findings"], row["impression"] = findings_impression(report)
        if not (row["findings"] or row["impression"]):
            return quarantine_entry(
                rec,
                "report",
                f"report has neither FINDINGS nor IMPRESSION section: {report_rel}",
                report_rel,
            )

    extra = rec.get("extra")
    row["extra"] = json.dumps(extra, ensure_ascii=False, default=str) if extra else None
    errs = row_errors(row)
    if errs:
        return quarantine_entry(rec, "validate", "schema violation: " + "; ".join(errs))
    row["_dedup_key"] = dedup_key(row)
    return row


def rows_to_table(rows: list[dict[str, Any]], node: str) -> pa.Table:
    """Output rows -> one table in :data:`INTERNAL_SCHEMA`."""
    cols = {c: [r.get(c) for r in rows] for c in COLUMNS + INTERNAL_COLUMNS}
    cols["_node"] = [node] * len(rows)
    return pa.Table.from_pydict(cols, schema=INTERNAL_SCHEMA)


def current_node() -> str:
    """This process's Ray node id, or ``local`` outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # outside a Ray worker the runtime context may be unavailable
        pass
    return "local"


def process_batch(batch: pa.Table, settings: ImageSettings, fail_at: int = -1) -> pa.Table:
    """Ray Data ``map_batches`` function: column ``rec`` (JSON records) -> output rows."""
    cache: dict[str, Any] = {}
    rows = [safe_process(s, settings, fail_at, cache) for s in batch.column("rec").to_pylist()]
    return rows_to_table(rows, current_node())


def safe_process(
    rec_json: str, settings: ImageSettings, fail_at: int = -1, cache: dict | None = None
) -> dict[str, Any]:
    """:func:`process_record` that turns an unexpected error on one record into a
    quarantine entry (stage ``internal``, with the error), so one odd record cannot
    stop a long run; it is logged and counted, never dropped."""
    rec = json.loads(rec_json)
    try:
        return process_record(rec, settings, fail_at, cache)
    except InjectedFailure:
        raise
    except Exception as e:
        log.warning("record %s: unexpected %s; quarantined", rec.get("sample_id"), type(e).__name__)
        return quarantine_entry(rec, "internal", f"unexpected error: {type(e).__name__}: {e}")
