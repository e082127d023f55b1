"""Preprocessed outputs: atomic commit on write, manifest and schema checks on read.

Layout of a committed output folder ``OUT``::

    OUT/_SUCCESS               manifest (JSON), written last: files, counts, schema version
    OUT/train/part-*.parquet   unified-schema shards, one folder per split
    OUT/validation/...
    OUT/test/...
    OUT/quarantine/part-*.parquet, OUT/quarantine.jsonl   rejected records with reasons
    OUT/duplicates.jsonl       rows dropped as duplicates, with the row they duplicate
    OUT/summary.json           the job's summary

Atomicity. For a local folder, the job writes into a hidden sibling
(``.OUT.tmp-<run>``) and renames it into place at the end; an earlier output is moved
aside first and deleted after, so at no moment does ``OUT`` hold a partial result.
Object stores cannot rename, so for URIs the job writes under ``OUT/run-<run>/`` and
commits by writing ``OUT/_SUCCESS`` (one object PUT) that points there. In both cases
readers go through the manifest and refuse a folder without one: a failed run leaves
nothing a reader would take for data.

A failed run's write tasks may still be running when the driver aborts (Ray Data stops
the execution, not the tasks already in flight). So on a local filesystem the staging
folder and its subfolders are made once, by ``begin``; tasks never create folders, and
``abort`` first renames the staging folder away, atomically. A late task then finds no
folder to write into (its error goes nowhere: the run has already failed) instead of
re-creating the staging folder after it was deleted.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import shutil
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medray.data import io
from medray.data.schema import (
    QUARANTINE_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    SPLITS,
    check_schema,
    validate_table,
)

log = logging.getLogger(__name__)

SUCCESS = "_SUCCESS"
FORMAT = "medray-unified"
QUARANTINE_DIR = "quarantine"
SHARD_DIRS = (*SPLITS, QUARANTINE_DIR)  # the folders write tasks put shards in


class OutputError(RuntimeError):
    """A preprocessed output is missing, incomplete, or cannot be written where asked."""


@dataclass(frozen=True)
class StagedOutput:
    """Where a running job writes (``staging``) and where the result ends up (``target``)."""

    target: str
    staging: str
    run_id: str

    @property
    def is_uri(self) -> bool:
        return io.is_uri(self.target)

    def data_dir(self) -> str:
        """The staging folder relative to the target, as the manifest records it."""
        return f"run-{self.run_id}" if self.is_uri else ""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:6]


def begin(target: str, overwrite: bool, run_id: str | None = None) -> StagedOutput:
    """Check the target and create an empty staging folder for a new run.

    Raises:
        OutputError: the target exists and ``overwrite`` is off, or it exists and is not a
            MedRay output (never deleted: choose another path).
    """
    run_id = run_id or new_run_id()
    has_success = io.is_file(io.join(target, SUCCESS))
    if io.is_uri(target):
        if has_success and not overwrite:
            raise OutputError(
                f"{target} already holds an output; set overwrite: true or pick another output"
            )
        staged = StagedOutput(target, io.join(target, f"run-{run_id}"), run_id)
        if io.is_local(target):  # file:// URIs: folders exist before any task writes
            for sub in SHARD_DIRS:
                io.make_dirs(io.join(staged.staging, sub))
        return staged
    path = Path(target)
    if path.exists():
        if not path.is_dir():
            raise OutputError(f"{target} exists and is not a folder; pick another output path")
        if any(path.iterdir()) and not has_success:
            raise OutputError(
                f"{target} exists and is not a MedRay preprocessed output (no {SUCCESS}); "
                "it is left alone: pick another output path or remove it yourself"
            )
        if has_success and not overwrite:
            raise OutputError(
                f"{target} already holds an output; set overwrite: true or pick another output"
            )
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.parent / f".{path.name}.tmp-{run_id}"
    staging.mkdir()
    for sub in SHARD_DIRS:
        (staging / sub).mkdir()
    return StagedOutput(str(path), str(staging), run_id)


def prune_unlisted(staged: StagedOutput, keep: set[str]) -> list[str]:
    """Delete staging files the manifest does not list (left by retried tasks); return them."""
    removed = []
    for loc in io.list_files(staged.staging):
        rel = loc[len(staged.staging.rstrip("/")) + 1 :]
        if rel not in keep:
            fs, p = io.filesystem(loc)
            fs.delete_file(p)
            removed.append(rel)
    if removed:
        log.warning("removed %d files not listed in the manifest (retried tasks)", len(removed))
    return removed


def commit(staged: StagedOutput, manifest: dict[str, Any]) -> None:
    """Make the staged output the target's content, atomically (see the module docstring)."""
    manifest = {
        **manifest,
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "data_dir": staged.data_dir(),
    }
    body = json.dumps(manifest, indent=2).encode()
    if staged.is_uri:
        io.write_bytes(io.join(staged.staging, SUCCESS), body)  # marks the run folder complete
        io.write_bytes(io.join(staged.target, SUCCESS), body)  # the commit point
        for loc in _run_dirs(staged.target):
            if not loc.rstrip("/").endswith(f"run-{staged.run_id}"):
                io.delete_dir(loc)
        return
    io.write_bytes(io.join(staged.staging, SUCCESS), body)
    target = Path(staged.target)
    old = target.parent / f".{target.name}.old-{staged.run_id}"
    if target.exists():
        os.rename(target, old)
    try:
        os.rename(staged.staging, target)
    except OSError:
        if old.exists() and not target.exists():
            os.rename(old, target)  # put the previous output back
        raise
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def abort(staged: StagedOutput) -> None:
    """Remove everything a failed run wrote (the target itself is untouched).

    On a local filesystem the staging folder is renamed away before it is deleted, so a
    write task still in flight cannot put files back under its name (module docstring).
    """
    doomed = staged.staging
    try:
        if io.is_local(staged.staging) and io.is_dir(staged.staging):
            fs, path = io.filesystem(staged.staging)
            parent, name = posixpath.split(path.rstrip("/"))
            aborted = posixpath.join(parent, f".{name}.aborted")
            fs.move(path, aborted)  # a rename: atomic
            doomed = aborted
        io.delete_dir(doomed)
    except OSError as e:  # the run's own error matters more; say what is left
        log.error("could not remove the failed run's folder %s: %s", doomed, e)


def _run_dirs(target: str) -> list[str]:
    fs, path = io.filesystem(target)
    import pyarrow.fs as pafs

    infos = fs.get_file_info(pafs.FileSelector(path, recursive=False, allow_not_found=True))
    base = target.rstrip("/")
    return [
        base + "/" + i.base_name
        for i in infos
        if i.type == pafs.FileType.Directory and i.base_name.startswith("run-")
    ]


def write_parquet(
    table: pa.Table, location: str, compression: str = "zstd", make_parent: bool = True
) -> None:
    """One Parquet file anywhere pyarrow can write (no column statistics for image bytes).

    ``make_parent=False`` for write tasks: their folder must already exist (see ``abort``).
    """
    fs, path = io.filesystem(location)
    if make_parent:
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
    stats = [n for n in table.schema.names if n != "image"]
    pq.write_table(
        table,
        path,
        filesystem=fs,
        compression=None if compression == "none" else compression,
        write_statistics=stats,
    )


# ----------------------------------------------------------------------------- reading


def load_manifest(location: str) -> dict[str, Any]:
    """The manifest of a committed output; refuse folders without one.

    Raises:
        OutputError: no such folder, no ``_SUCCESS`` (a failed, running or foreign
            folder), or a manifest
            of another format or schema version.
    """
    marker = io.join(location, SUCCESS)
    if not io.exists(location):
        raise OutputError(
            f"{location} does not exist: pass the output folder of the preprocess job "
            "(`medray job submit -- python -m jobs.preprocess` writes $MEDRAY_HOME/data/synthetic)"
        )
    if not io.is_file(marker):
        raise OutputError(
            f"{location} has no {SUCCESS} manifest: not a complete MedRay preprocessed output "
            "(the job failed, is still running, or this is another folder)"
        )
    manifest = json.loads(io.read_text(marker))
    if manifest.get("format") != FORMAT:
        raise OutputError(f"{marker}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise OutputError(
            f"{marker}: schema version {manifest.get('schema_version')!r}; this MedRay reads "
            f"version {SCHEMA_VERSION}: re-run the preprocess job"
        )
    return manifest


def data_files(location: str, split: str | None = None, manifest: dict | None = None) -> list[str]:
    """Locations of the data shards (of one split, or all) listed in the manifest."""
    manifest = manifest or load_manifest(location)
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    base = io.join(location, manifest["data_dir"]) if manifest["data_dir"] else location
    splits = [split] if split else list(SPLITS)
    return [io.join(base, rel) for s in splits for rel in manifest["files"].get(s, [])]


def _read_file(loc: str, columns: list[str] | None = None) -> pa.Table:
    fs, path = io.filesystem(loc)
    return pq.read_table(path, filesystem=fs, columns=columns)


def read_table(
    location: str,
    split: str | None = None,
    columns: list[str] | None = None,
    validate: bool = True,
) -> pa.Table:
    """Read a committed output (or one split) as one table, checked against the schema.

    With ``columns`` only those are read and only their types are checked; otherwise
    every file must match :data:`~medray.data.schema.SCHEMA` exactly and, with
    ``validate``, every row passes :func:`~medray.data.schema.validate_table`.
    """
    files = data_files(location, split)
    tables = []
    for loc in files:
        t = _read_file(loc, columns)
        if columns is None:
            check_schema(t.schema, where=loc)
            if validate:
                validate_table(t, where=loc)
        else:
            for name in columns:
                want = SCHEMA.field(name).type
                if not t.schema.field(name).type.equals(want):
                    raise OutputError(
                        f"{loc}: column {name!r} is {t.schema.field(name).type}, expected {want}"
                    )
        tables.append(t)
    if not tables:
        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        return schema.empty_table()
    return pa.concat_tables(tables)


def read_quarantine(location: str) -> pa.Table:
    """The quarantined records of a committed output."""
    manifest = load_manifest(location)
    base = io.join(location, manifest["data_dir"]) if manifest["data_dir"] else location
    tables = [_read_file(io.join(base, rel)) for rel in manifest.get("quarantine", [])]
    return pa.concat_tables(tables) if tables else QUARANTINE_SCHEMA.empty_table()


def validate_batch(batch: pa.Table) -> pa.Table:
    """Ray Data ``map_batches`` function that checks every batch read back (pyarrow format)."""
    validate_table(batch.select(list(SCHEMA.names)).cast(SCHEMA), where="batch")
    return batch


def read_ray_dataset(location: str, split: str | None = None, validate: bool = True):
    """A Ray Dataset over a committed output (or one split); schema checked on read.

    Every file's footer is checked against the schema here; with ``validate`` every batch
    is also checked for the schema's value rules as it streams.
    """
    import ray

    files = data_files(location, split)
    if not files:
        raise OutputError(f"{location}: no data files for split {split!r}")
    for loc in files:
        fs, path = io.filesystem(loc)
        check_schema(pq.read_schema(fs.open_input_file(path)), where=loc)
    fs, _ = io.filesystem(files[0])
    ds = ray.data.read_parquet([io.filesystem(f)[1] for f in files], filesystem=fs)
    if validate:
        ds = ds.map_batches(validate_batch, batch_format="pyarrow", batch_size=None)
    return ds
