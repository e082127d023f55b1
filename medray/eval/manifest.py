"""The manifest of a predictions folder (``manifest.json``, format ``medray-predictions/1``):
what it holds (:class:`PredictionManifest`), the fingerprint of the exact input rows, and
where a folder lies (local path, ``$MEDRAY_HOME``, ``file://`` or ``s3://``). The folder
contract as a whole is :mod:`medray.eval.predictions`."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs

from medray.eval.prediction_columns import PredictionFileError
from medray.paths import medray_home

FORMAT = "medray-predictions/1"
MANIFEST = "manifest.json"


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


def read_manifest(folder: str | Path) -> PredictionManifest:
    """Read and check ``manifest.json`` of a predictions folder (local path or URI)."""
    fs, base = open_location(str(folder))
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
    check_manifest_values(data, str(path))
    known = {f for f in PredictionManifest.__dataclass_fields__}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PredictionFileError(
            f"{path}: unknown manifest keys {unknown}; known: {sorted(known)}"
        )
    return PredictionManifest(**data)


def expand_location(raw: str) -> str:
    """A local path or URI as written in a config, made absolute: ``$MEDRAY_HOME`` and other
    environment variables and ``~`` expanded; URIs (``s3://...``) kept as they are."""
    if "://" in raw:
        return raw.rstrip("/")
    text = raw.replace("${MEDRAY_HOME}", str(medray_home())).replace(
        "$MEDRAY_HOME", str(medray_home())
    )
    return os.path.normpath(os.path.abspath(os.path.expandvars(os.path.expanduser(text))))


def open_location(location: str) -> tuple[pafs.FileSystem, str]:
    """``(pyarrow filesystem, path in it)`` of a folder: local path, ``file://`` or ``s3://``..."""
    if "://" in location:
        try:
            return pafs.FileSystem.from_uri(location.rstrip("/"))
        except (pa.ArrowInvalid, OSError) as e:
            raise PredictionFileError(f"{location}: cannot open this location: {e}") from None
    return pafs.LocalFileSystem(), expand_location(location)


def check_manifest_values(data: Mapping[str, Any], where: str) -> None:
    for key in ("model", "model_label", "dataset", "split", "dataset_fingerprint"):
        v = data.get(key)
        if not isinstance(v, str) or not v:
            raise PredictionFileError(f"{where}: manifest key {key!r} must be a non-empty string")
    if data.get("adapter") is not None and not isinstance(data["adapter"], str):
        raise PredictionFileError(f"{where}: manifest key 'adapter' must be a string or null")
    if not isinstance(data.get("config", {}), dict):
        raise PredictionFileError(f"{where}: manifest key 'config' must be an object")
