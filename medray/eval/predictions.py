"""The prediction-file contract between batch inference and evaluation (format ``medray-predictions/1``).

A *predictions folder* is one model's (or adapter's) answers on one input split:

    PRED/manifest.json      which model, which dataset and split, which exact rows
    PRED/*.parquet          one row per input row (any number of files, any sub-folders)

Manifest keys: ``format`` (``"medray-predictions/1"``), ``model`` (preset, hub id or
folder), ``adapter`` (LoRA adapter folder or null), ``model_label`` (short name for
tables: ``base``, ``sft``, ``grpo``), ``dataset`` (the preprocessed input), ``split``,
``dataset_fingerprint`` (:func:`fingerprint` of the input rows), ``created`` (ISO time)
and ``config`` (the producing job's config, free form).

Rows keep the reference fields of the input row (:data:`REFERENCE_COLUMNS`), add the
model's output (:data:`PREDICTION_COLUMNS`) and may add the optional columns of
:data:`OPTIONAL_COLUMNS` (counterfactual answers, MCQ letters and token NLL, generated
text, retrieval vectors or ranked lists). Every input row has exactly one output row: a
row whose image could not be read stays in the file with ``error`` set (e.g. ``"image:
truncated or corrupt image"``) and null predictions, and counts as wrong and invalid.

:func:`write_predictions` writes a folder (used by batch inference and by the vote
aggregation); :func:`write_manifest` adds the manifest to Parquet files written elsewhere
(e.g. by Ray Data). :func:`read_predictions` reads a folder and checks everything:
manifest keys, column names and types (no unknown columns), value rules, and that the
rows are the ones the manifest's fingerprint names. :func:`check_expected` refuses a
folder made for another dataset, split, model or set of rows.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray.data.schema import ANSWER_TYPES, BOX_TYPE, TASKS
from medray.paths import medray_home

log = logging.getLogger(__name__)

FORMAT = "medray-predictions/1"
MANIFEST = "manifest.json"

# (name, type, nullable, meaning). docs/evaluation.md's "prediction-file contract" lists them all.
REFERENCE_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("sample_id", pa.string(), False, "the input row's stable id (unique in the file)"),
    ("source", pa.string(), False, "source dataset name (vqa-rad, slake, ...)"),
    ("split", pa.string(), False, "the input split; equals the manifest's split"),
    ("task", pa.string(), False, "vqa | report | mcq"),
    ("question", pa.string(), True, "question text"),
    ("answer", pa.string(), True, "reference answer"),
    ("answer_type", pa.string(), True, "closed | open | choice"),
    ("modality", pa.string(), True, "x-ray | ct | mri | ..."),
    ("organ", pa.string(), True, "body part"),
    ("content_type", pa.string(), True, "question category (modality, organ, presence, ...)"),
    ("choices", pa.list_(pa.string()), True, "answer options of choice questions"),
    ("labels", pa.list_(pa.string()), True, "positive findings"),
    ("boxes", pa.list_(BOX_TYPE), True, "reference boxes {label, x1, y1, x2, y2} in [0, 1]"),
)
PREDICTION_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("raw_text", pa.string(), True, "the model's raw output text (null if not inferred)"),
    ("parse_ok", pa.bool_(), False, "the output parsed into a valid structured answer"),
    ("parsed", pa.string(), True, "the parsed answer as a JSON object string, or null"),
    ("parse_errors", pa.list_(pa.string()), True, "problems the parser could not repair"),
    ("repaired", pa.list_(pa.string()), True, "repairs the parser applied"),
    ("pred_answer", pa.string(), True, "the answer that is scored (null: no answer)"),
    ("pred_caption", pa.string(), True, "the caption of the structured answer"),
    ("pred_reasoning", pa.list_(pa.string()), True, "the reasoning steps"),
    ("pred_boxes", pa.list_(pa.list_(pa.float64())), True, "[[x1, y1, x2, y2], ...] in [0, 1]"),
    ("confidence", pa.float64(), True, "answer probability from token log-probs, in [0, 1]"),
    ("latency_ms", pa.float64(), False, "inference time of the row in milliseconds"),
    ("error", pa.string(), False, "empty if inferred; else why not (e.g. 'image: ...')"),
)
OPTIONAL_COLUMNS: tuple[tuple[str, pa.DataType, bool, str], ...] = (
    ("language", pa.string(), True, "ISO 639-1 language of the question"),
    ("node", pa.string(), True, "the Ray node that inferred the row (batch inference)"),
    ("cf_roi_answer", pa.string(), True, "answer with the region of interest inpainted"),
    (
        "cf_random_answer",
        pa.string(),
        True,
        "answer with a random region of the same size inpainted",
    ),
    (
        "cf_kind",
        pa.string(),
        True,
        "what the inpainted region of interest is (medray.contracts.counterfactual.KINDS)",
    ),
    ("blank_answer", pa.string(), True, "answer with a blank image (text-prior control)"),
    (
        "caption_consistency",
        pa.float64(),
        True,
        "cosine of the predicted caption and the question (the GRPO consistency reward)",
    ),
    ("mcq_pred", pa.string(), True, "predicted option letter (A, B, ...) of a choice question"),
    ("nll", pa.float64(), True, "summed negative log-likelihood (nats) of the reference answer"),
    ("n_tokens", pa.int64(), True, "number of tokens the nll sums over"),
    ("reference_text", pa.string(), True, "reference text of a generation task (report, summary)"),
    ("generated_text", pa.string(), True, "the generated text scored against reference_text"),
    ("input_text", pa.string(), True, "the text a text model was given (findings, question)"),
    ("finish_reason", pa.string(), True, "stop | length (the generation hit its token limit)"),
    ("image_embedding", pa.list_(pa.float32()), True, "image vector of a retrieval run"),
    ("text_embedding", pa.list_(pa.float32()), True, "vector of the row's reference_text"),
    ("retrieved_ids", pa.list_(pa.string()), True, "ranked ids a search returned for the row"),
    ("relevant_ids", pa.list_(pa.string()), True, "ids relevant to the row's query"),
)
ALL_COLUMNS = REFERENCE_COLUMNS + PREDICTION_COLUMNS + OPTIONAL_COLUMNS
REQUIRED = tuple(c[0] for c in REFERENCE_COLUMNS + PREDICTION_COLUMNS)
TYPES: dict[str, pa.DataType] = {name: tp for name, tp, _, _ in ALL_COLUMNS}
NON_NULL = tuple(name for name, _, nullable, _ in ALL_COLUMNS if not nullable)


class PredictionFileError(ValueError):
    """A predictions folder breaks the contract; the message says what and where."""


class PredictionMismatchError(PredictionFileError):
    """A predictions folder is valid but was made for other rows, split, dataset or model."""


@dataclass(frozen=True)
class PredictionManifest:
    """What a predictions folder holds (``manifest.json``)."""

    model: str
    model_label: str
    dataset: str
    split: str
    dataset_fingerprint: str
    adapter: str | None = None
    created: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, ``format`` first."""
        d = asdict(self)
        return {"format": d.pop("format"), **d}


@dataclass(frozen=True)
class Predictions:
    """A predictions folder read and checked by :func:`read_predictions`."""

    path: str
    manifest: PredictionManifest
    table: pa.Table

    @property
    def label(self) -> str:
        return self.manifest.model_label

    def rows(self) -> list[dict[str, Any]]:
        """Every row as a plain dict (lists as lists, boxes as dicts)."""
        return self.table.to_pylist()


def fingerprint(
    sample_ids: Sequence[str], questions: Sequence[str | None], answers: Sequence[str | None]
) -> str:
    """Identify an exact set of input rows: SHA-256 over the sorted (id, question, answer).

    Row order does not matter; adding, removing or changing a row's question or answer
    changes the fingerprint. Batch inference computes it over the rows it reads; the
    evaluation recomputes it over the rows in the file.
    """
    if not len(sample_ids) == len(questions) == len(answers):
        raise ValueError("sample_ids, questions and answers must have the same length")
    h = hashlib.sha256()
    for sid, q, a in sorted(zip(sample_ids, questions, answers, strict=True), key=lambda r: r[0]):
        h.update(f"{sid}\x1f{q or ''}\x1f{a or ''}\n".encode())
    return "sha256:" + h.hexdigest()


def table_fingerprint(table: pa.Table) -> str:
    """:func:`fingerprint` of a table with ``sample_id``, ``question`` and ``answer`` columns."""
    cols = [table.column(c).to_pylist() for c in ("sample_id", "question", "answer")]
    return fingerprint(*cols)


def prediction_schema(columns: Iterable[str] | None = None) -> pa.Schema:
    """The Arrow schema of a predictions table: the required columns plus ``columns``
    (optional ones), in contract order."""
    wanted = set(REQUIRED) | set(columns or ())
    unknown = wanted - set(TYPES)
    if unknown:
        raise PredictionFileError(_unknown_message(sorted(unknown)))
    return pa.schema(
        [pa.field(n, tp, nullable=nullable) for n, tp, nullable, _ in ALL_COLUMNS if n in wanted]
    )


def build_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """A predictions table from dict rows (missing nullable columns become null).

    The columns are the required ones plus every optional column any row sets.
    """
    present = {k for r in rows for k in r}
    unknown = present - set(TYPES)
    if unknown:
        raise PredictionFileError(_unknown_message(sorted(unknown)))
    schema = prediction_schema(present - set(REQUIRED))
    try:
        return pa.Table.from_pylist([{n: r.get(n) for n in schema.names} for r in rows], schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise PredictionFileError(f"rows do not fit the prediction columns: {e}") from None


def unreadable_row(reference: Mapping[str, Any], error: str) -> dict[str, Any]:
    """The output row for an input row that could not be inferred (kept, never dropped).

    Args:
        reference: the input row (its reference fields are copied).
        error: why, e.g. ``"image: truncated or corrupt image"``.
    """
    if not error:
        raise ValueError("an unreadable row needs a non-empty error")
    row = {name: reference.get(name) for name, *_ in REFERENCE_COLUMNS}
    row.update(
        raw_text=None,
        parse_ok=False,
        parsed=None,
        parse_errors=[],
        repaired=[],
        pred_answer=None,
        pred_caption=None,
        pred_reasoning=[],
        pred_boxes=[],
        confidence=None,
        latency_ms=0.0,
        error=error,
    )
    return row


def write_manifest(
    folder: str | Path,
    *,
    model: str,
    model_label: str,
    dataset: str,
    split: str,
    dataset_fingerprint: str,
    adapter: str | None = None,
    config: Mapping[str, Any] | None = None,
    verify: bool = True,
) -> PredictionManifest:
    """Write ``manifest.json`` into a folder that already holds the Parquet files.

    Write it last: a folder without a manifest is refused by :func:`read_predictions`,
    so an interrupted run never passes for a complete one. With ``verify`` the folder is
    read back with :func:`read_predictions` and the manifest removed again if the files
    break the contract (e.g. a row was dropped), so a folder with a manifest is always a
    valid predictions folder.

    Raises:
        PredictionFileError: the manifest values or (with ``verify``) the files are invalid.
    """
    manifest = PredictionManifest(
        model=model,
        model_label=model_label,
        dataset=dataset,
        split=split,
        dataset_fingerprint=dataset_fingerprint,
        adapter=adapter,
        created=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        config=dict(config or {}),
    )
    _check_manifest_values(manifest.to_dict(), str(folder))
    fs, path = _filesystem(str(folder))
    body = (json.dumps(manifest.to_dict(), indent=2, default=str) + "\n").encode()
    if isinstance(fs, pafs.LocalFileSystem):
        tmp = Path(path) / (MANIFEST + ".tmp")
        tmp.write_bytes(body)
        os.replace(tmp, Path(path) / MANIFEST)  # atomic: readers never see half a manifest
    else:
        with fs.open_output_stream(f"{path}/{MANIFEST}") as f:  # one PUT: atomic on object stores
            f.write(body)
    if verify:
        try:
            read_predictions(folder)
        except PredictionFileError:
            fs.delete_file(f"{path}/{MANIFEST}")
            raise
    return manifest


def write_predictions(
    folder: str | Path,
    rows: pa.Table | Sequence[Mapping[str, Any]],
    *,
    model: str,
    model_label: str,
    dataset: str,
    split: str,
    adapter: str | None = None,
    config: Mapping[str, Any] | None = None,
    dataset_fingerprint: str | None = None,
    overwrite: bool = False,
) -> PredictionManifest:
    """Write a predictions folder: ``part-00000.parquet`` then ``manifest.json``.

    Args:
        folder: the folder to write (created).
        rows: the rows, as a table or dict rows.
        model, model_label, dataset, split, adapter, config: manifest fields.
        dataset_fingerprint: the input rows' fingerprint; default: computed from ``rows``
            (right whenever every input row has its output row, as the contract requires).
        overwrite: replace an existing predictions folder.

    Raises:
        PredictionFileError: the rows break the contract, or ``folder`` exists and is not
            to be overwritten.
    """
    if "://" in str(folder):
        raise PredictionFileError(
            f"{folder}: write_predictions writes local folders; on object storage write the "
            "Parquet files with Ray Data and then call write_manifest"
        )
    out = Path(expand_location(str(folder)))
    table = rows if isinstance(rows, pa.Table) else build_table(rows)
    table = _conform(table, str(out))
    _check_values(table, split, str(out))
    fp = table_fingerprint(table)
    if dataset_fingerprint and dataset_fingerprint != fp:
        raise PredictionMismatchError(
            f"{out}: the {table.num_rows} rows are not the input rows {dataset_fingerprint} "
            f"(they give {fp}): every input row needs its output row, unreadable ones included"
        )
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise PredictionFileError(
                f"{out} is not empty; pass overwrite=True or pick another folder"
            )
        if not (out / MANIFEST).is_file():
            raise PredictionFileError(
                f"{out} is not a predictions folder (no {MANIFEST}); it is left alone"
            )
        for p in out.rglob("*.parquet"):
            p.unlink()
        (out / MANIFEST).unlink()
    out.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out / "part-00000.parquet")
    return write_manifest(
        out,
        model=model,
        model_label=model_label,
        dataset=dataset,
        split=split,
        dataset_fingerprint=fp,
        adapter=adapter,
        config=config,
        verify=False,  # checked above
    )


def read_manifest(folder: str | Path) -> PredictionManifest:
    """Read and check ``manifest.json`` of a predictions folder (local path or URI)."""
    fs, base = _filesystem(str(folder))
    path = f"{folder}/{MANIFEST}"
    if fs.get_file_info(base).type != pafs.FileType.Directory:
        raise PredictionFileError(f"{folder}: no such predictions folder")
    if fs.get_file_info(f"{base}/{MANIFEST}").type != pafs.FileType.File:
        raise PredictionFileError(
            f"{folder}: no {MANIFEST}; not a complete predictions folder (batch inference "
            "writes the manifest last: the run failed, is still running, or this is another folder)"
        )
    try:
        with fs.open_input_stream(f"{base}/{MANIFEST}") as f:
            data = json.loads(f.read().decode())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PredictionFileError(f"{path}: not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise PredictionFileError(f"{path}: must hold a JSON object")
    fmt = data.get("format")
    if fmt != FORMAT:
        raise PredictionFileError(
            f"{path}: format {fmt!r}, expected {FORMAT!r}"
            + (
                " (written by another MedRay version: re-run batch inference)"
                if isinstance(fmt, str) and fmt.startswith("medray-predictions/")
                else ""
            )
        )
    _check_manifest_values(data, str(path))
    known = {f for f in PredictionManifest.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PredictionFileError(
            f"{path}: unknown manifest keys {unknown}; known: {sorted(known)}"
        )
    return PredictionManifest(**data)


def read_predictions(folder: str | Path) -> Predictions:
    """Read a predictions folder and check it against the contract.

    Raises:
        PredictionFileError: no manifest, no Parquet files, missing or unknown columns,
            a column of the wrong type, a broken value rule (the message names the row).
        PredictionMismatchError: the rows are not the ones the manifest names (another
            split in the rows, or a fingerprint that does not match).
    """
    folder = expand_location(str(folder))
    manifest = read_manifest(folder)
    fs, base = _filesystem(folder)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True))
    files = sorted(
        i.path for i in infos if i.type == pafs.FileType.File and i.path.endswith(".parquet")
    )
    if not files:
        raise PredictionFileError(f"{folder}: no Parquet files next to {MANIFEST}")
    tables = []
    for f in files:
        try:
            t = pq.read_table(f, filesystem=fs)
        except (pa.ArrowInvalid, OSError) as e:
            raise PredictionFileError(f"{f}: not a readable Parquet file: {e}") from None
        tables.append(_conform(t, f))
    names = tables[0].schema.names
    for f, t in zip(files[1:], tables[1:], strict=True):
        if t.schema.names != names:
            raise PredictionFileError(
                f"{f}: columns differ from {files[0]}'s "
                f"({sorted(set(t.schema.names) ^ set(names))})"
            )
    table = pa.concat_tables(tables)
    _check_values(table, manifest.split, str(folder))
    got = table_fingerprint(table)
    if got != manifest.dataset_fingerprint:
        raise PredictionMismatchError(
            f"{folder}: the rows do not match the manifest: it names input rows "
            f"{manifest.dataset_fingerprint}, the file's {table.num_rows} rows give {got} "
            "(rows were added, dropped or edited after batch inference; re-run it)"
        )
    return Predictions(folder, manifest, table)


def check_expected(
    preds: Predictions,
    *,
    dataset: str = "",
    split: str = "",
    model: str = "",
    fingerprint: str = "",
) -> None:
    """Refuse predictions made for another dataset, split, model or set of input rows.

    Empty arguments are not checked. ``model`` matches the manifest's ``model``,
    ``adapter`` or ``model_label``.

    Raises:
        PredictionMismatchError: naming the field, the expected and the found value.
    """
    m = preds.manifest
    where = f"{preds.path} ({m.model_label})"
    if split and m.split != split:
        raise PredictionMismatchError(
            f"{where} holds predictions for split {m.split!r}, not the expected {split!r}: "
            "run batch inference on that split or change the expected split"
        )
    if dataset and expand_location(m.dataset) != expand_location(dataset):
        raise PredictionMismatchError(
            f"{where} was made from dataset {m.dataset!r}, not the expected {dataset!r}"
        )
    if model and model not in {m.model, m.adapter, m.model_label}:
        raise PredictionMismatchError(
            f"{where} holds predictions of model {m.model!r} (adapter {m.adapter!r}, label "
            f"{m.model_label!r}), not the expected {model!r}"
        )
    if fingerprint and m.dataset_fingerprint != fingerprint:
        raise PredictionMismatchError(
            f"{where} was made on other input rows ({m.dataset_fingerprint}) than expected "
            f"({fingerprint}): same split, different rows (another preprocess run, a row "
            "limit or a filter); re-run batch inference on the expected rows"
        )


# ----------------------------------------------------------------------------- checks


def expand_location(raw: str) -> str:
    """A local path or URI as written in a config, made absolute: ``$MEDRAY_HOME`` and other
    environment variables and ``~`` expanded; URIs (``s3://...``) kept as they are."""
    if "://" in raw:
        return raw.rstrip("/")
    text = raw.replace("${MEDRAY_HOME}", str(medray_home())).replace(
        "$MEDRAY_HOME", str(medray_home())
    )
    return os.path.normpath(os.path.abspath(os.path.expandvars(os.path.expanduser(text))))


def _filesystem(location: str) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path in it)`` of a folder: local path, ``file://`` or ``s3://``..."""
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location.rstrip("/"))
        except (pa.ArrowInvalid, OSError) as e:
            raise PredictionFileError(f"{location}: cannot open this location: {e}") from None
    return pafs.LocalFileSystem(), expand_location(location)


def _unknown_message(unknown: Sequence[str]) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, TYPES, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"unknown prediction columns {', '.join(hints)}; the contract's columns: {', '.join(TYPES)}"
    )


def _check_manifest_values(data: Mapping[str, Any], where: str) -> None:
    for key in ("model", "model_label", "dataset", "split", "dataset_fingerprint"):
        v = data.get(key)
        if not isinstance(v, str) or not v:
            raise PredictionFileError(f"{where}: manifest key {key!r} must be a non-empty string")
    if data.get("adapter") is not None and not isinstance(data["adapter"], str):
        raise PredictionFileError(f"{where}: manifest key 'adapter' must be a string or null")
    if not isinstance(data.get("config", {}), dict):
        raise PredictionFileError(f"{where}: manifest key 'config' must be an object")


def _conform(table: pa.Table, where: str) -> pa.Table:
    """Check column names, cast each column to its contract type, order as the contract."""
    names = table.schema.names
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise PredictionFileError(f"{where}: missing required columns {missing}")
    unknown = [c for c in names if c not in TYPES]
    if unknown:
        raise PredictionFileError(f"{where}: {_unknown_message(unknown)}")
    if len(set(names)) != len(names):
        raise PredictionFileError(f"{where}: duplicate column names")
    schema = prediction_schema(c for c in names if c not in REQUIRED)
    columns = []
    for fld in schema:
        col = table.column(fld.name)
        if not col.type.equals(fld.type):
            try:
                col = col.cast(fld.type, safe=True)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
                raise PredictionFileError(
                    f"{where}: column {fld.name!r} has type {table.column(fld.name).type}, "
                    f"expected {fld.type}"
                ) from None
        if not fld.nullable and col.null_count:
            raise PredictionFileError(f"{where}: column {fld.name!r} has nulls but is required")
        columns.append(col)
    return pa.table(columns, schema=schema)


def _check_values(table: pa.Table, split: str, where: str) -> None:
    ids = table.column("sample_id").to_pylist()
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        dup = next(i for i in ids if i in seen or seen.add(i))
        raise PredictionFileError(f"{where}: sample_id {dup!r} appears more than once")
    splits = set(table.column("split").to_pylist())
    if splits != {split} and table.num_rows:
        raise PredictionMismatchError(
            f"{where}: rows of split(s) {sorted(splits)} in predictions whose manifest names "
            f"split {split!r}: this file mixes or mislabels splits; re-run batch inference"
        )
    cols = ["sample_id", "task", "answer", "answer_type", "choices", "parse_ok", "parsed",
            "pred_answer", "pred_boxes", "confidence", "latency_ms", "error"]  # fmt: skip
    for row in table.select(cols).to_pylist():
        problem = _row_problem(row)
        if problem:
            raise PredictionFileError(f"{where}: row {row['sample_id']!r}: {problem}")


def _row_problem(row: Mapping[str, Any]) -> str | None:
    if row["task"] not in TASKS:
        return f"task {row['task']!r} is not one of {list(TASKS)}"
    if row["answer_type"] is not None and row["answer_type"] not in ANSWER_TYPES:
        return f"answer_type {row['answer_type']!r} is not one of {list(ANSWER_TYPES)}"
    if row["answer_type"] == "choice" and (
        len(row["choices"] or ()) < 2 or row["answer"] not in row["choices"]
    ):
        return "a choice question needs at least two choices, the answer one of them"
    c = row["confidence"]
    if c is not None and not (math.isfinite(c) and 0.0 <= c <= 1.0):
        return f"confidence {c} is not in [0, 1]"
    lat = row["latency_ms"]
    if not (math.isfinite(lat) and lat >= 0):
        return f"latency_ms {lat} is not a non-negative number"
    if row["error"] and (row["pred_answer"] is not None or row["parse_ok"]):
        return "a row with an error must have null predictions (pred_answer null, parse_ok false)"
    for box in row["pred_boxes"] or ():
        if box is None or len(box) != 4 or not all(v is not None and math.isfinite(v) for v in box):
            return f"pred_boxes entry {box} is not four finite numbers [x1, y1, x2, y2]"
    if row["parse_ok"]:
        try:
            obj = json.loads(row["parsed"]) if row["parsed"] is not None else None
        except json.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            return "parse_ok is true but parsed is not a JSON object string"
    return None
