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
folder made for another dataset, split, model or set of rows. The manifest's own parts
(:class:`PredictionManifest`, :func:`fingerprint`, :func:`read_manifest`, locations) live
in :mod:`medray.eval.manifest`, the columns in :mod:`medray.eval.prediction_columns`; both
are re-exported here.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from medray.eval.manifest import (  # the manifest's API, re-exported here
    FORMAT,
    MANIFEST,
    PredictionManifest,
    check_manifest_values,
    expand_location,
    fingerprint,
    open_location,
    read_manifest,
    table_fingerprint,
)
from medray.eval.prediction_columns import (  # the contract's columns, re-exported here
    ALL_COLUMNS,
    NON_NULL,
    OPTIONAL_COLUMNS,
    PREDICTION_COLUMNS,
    REFERENCE_COLUMNS,
    REQUIRED,
    TYPES,
    PredictionFileError,
    PredictionMismatchError,
    build_table,
    check_values,
    conform,
    prediction_schema,
)

__all__ = [
    "ALL_COLUMNS", "FORMAT", "MANIFEST", "NON_NULL", "OPTIONAL_COLUMNS", "PREDICTION_COLUMNS",
    "REFERENCE_COLUMNS", "REQUIRED", "TYPES", "PredictionFileError", "PredictionManifest",
    "PredictionMismatchError", "Predictions", "build_table", "check_expected", "expand_location",
    "fingerprint", "prediction_schema", "read_manifest", "read_predictions", "table_fingerprint",
    "unreadable_row", "write_manifest", "write_predictions",
]  # fmt: skip

log = logging.getLogger(__name__)


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
    check_manifest_values(manifest.to_dict(), str(folder))
    fs, path = open_location(str(folder))
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
    table = conform(table, str(out))
    check_values(table, split, str(out))
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
    fs, base = open_location(folder)
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
        tables.append(conform(t, f))
    names = tables[0].schema.names
    for f, t in zip(files[1:], tables[1:], strict=True):
        if t.schema.names != names:
            raise PredictionFileError(
                f"{f}: columns differ from {files[0]}'s "
                f"({sorted(set(t.schema.names) ^ set(names))})"
            )
    table = pa.concat_tables(tables)
    check_values(table, manifest.split, str(folder))
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
