"""The columns of the prediction-file contract (``medray-predictions/1``) and their checks.

Each column is ``(name, Arrow type, nullable, meaning)``; docs/evaluation.md lists them.
:func:`prediction_schema` and :func:`build_table` build tables in the contract's order;
``conform`` and ``check_values`` are what :func:`medray.eval.predictions.read_predictions`
runs on a folder's rows. The folder format (manifest, Parquet files, fingerprints) is
:mod:`medray.eval.predictions`.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa

from medray.data.schema import ANSWER_TYPES, BOX_TYPE, TASKS

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


def _unknown_message(unknown: Sequence[str]) -> str:
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, TYPES, n=1)
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return (
        f"unknown prediction columns {', '.join(hints)}; the contract's columns: {', '.join(TYPES)}"
    )


def conform(table: pa.Table, where: str) -> pa.Table:
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


def check_values(table: pa.Table, split: str, where: str) -> None:
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
