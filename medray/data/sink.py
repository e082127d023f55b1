"""Writing transformed rows: Parquet shards per split, quarantine shards, bookkeeping.

:func:`write_block` takes one table of transformed rows (see
:mod:`medray.data.transform`), validates the good rows against the unified schema, writes
them as one Parquet shard per split and the rejected ones as one quarantine shard, and
returns a small :class:`BlockResult` (files, counts, and the dedup index entries of the
rows written). :class:`UnifiedDatasink` runs it inside Ray Data write tasks, fused with
the transform; the single-process baseline calls it directly.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from ray.data.block import Block, BlockAccessor
from ray.data.datasource.datasink import Datasink, WriteResult

from medray.data import io
from medray.data.output import write_parquet
from medray.data.schema import COLUMNS, QUARANTINE_SCHEMA, SCHEMA, SPLITS, validate_table
from medray.data.transform import INTERNAL_SCHEMA


@dataclass
class BlockResult:
    """What one written block reports back to the driver (small: no pixels)."""

    files: dict[str, list[tuple[str, int]]] = field(default_factory=dict)  # split -> [(rel, rows)]
    quarantine_files: list[tuple[str, int]] = field(default_factory=list)
    # Dedup index, one entry per row written: (key, split, sample_id, file, source).
    index: list[tuple[str, str, str, str, str]] = field(default_factory=list)
    written: Counter = field(default_factory=Counter)  # (source, split, task) -> rows
    quarantined: Counter = field(default_factory=Counter)  # (source, reason kind) -> rows
    nodes: Counter = field(default_factory=Counter)  # node id -> rows processed

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "quarantine_files": self.quarantine_files,
            "index": self.index,
            "written": dict(self.written),
            "quarantined": dict(self.quarantined),
            "nodes": dict(self.nodes),
        }


def reason_kind(reason: str) -> str:
    """The category of a quarantine reason: the text before its first colon."""
    return reason.split(":", 1)[0].strip()


def write_block(table: pa.Table, staging: str, tag: str, compression: str = "zstd") -> BlockResult:
    """Validate and write one block of transformed rows under ``staging``.

    Raises:
        SchemaError: a row that passed the transform's checks breaks the schema here (a
            bug, not bad data: the run fails rather than write it).
    """
    table = table.select(list(INTERNAL_SCHEMA.names)).cast(INTERNAL_SCHEMA)
    res = BlockResult()
    res.nodes.update(table.column("_node").to_pylist())
    bad_mask = pc.is_valid(table.column("_reason"))
    good = table.filter(pc.invert(bad_mask))
    bad = table.filter(bad_mask)
    for split in SPLITS:
        part = good.filter(pc.equal(good.column("split"), split))
        if not part.num_rows:
            continue
        rel = f"{split}/part-{tag}.parquet"
        data = part.select(list(COLUMNS)).cast(SCHEMA)
        validate_table(data, where=rel)
        write_parquet(data, io.join(staging, rel), compression, make_parent=False)
        res.files.setdefault(split, []).append((rel, part.num_rows))
        sources = part.column("source").to_pylist()
        tasks = part.column("task").to_pylist()
        res.written.update((s, split, t) for s, t in zip(sources, tasks, strict=True))
        res.index.extend(
            zip(
                part.column("_dedup_key").to_pylist(),
                [split] * part.num_rows,
                part.column("sample_id").to_pylist(),
                [rel] * part.num_rows,
                sources,
                strict=True,
            )
        )
    if bad.num_rows:
        rel = f"quarantine/part-{tag}.parquet"
        q = pa.table(
            {
                "source": bad.column("source"),
                "original_id": bad.column("original_id"),
                "sample_id": bad.column("sample_id"),
                "stage": bad.column("_stage"),
                "reason": bad.column("_reason"),
                "path": bad.column("_path"),
                "record": bad.column("_raw"),
            }
        ).cast(QUARANTINE_SCHEMA)
        write_parquet(q, io.join(staging, rel), compression, make_parent=False)
        res.quarantine_files.append((rel, bad.num_rows))
        res.quarantined.update(
            (s, reason_kind(r))
            for s, r in zip(
                bad.column("source").to_pylist(), bad.column("_reason").to_pylist(), strict=True
            )
        )
    return res


class UnifiedDatasink(Datasink[dict]):
    """Ray Data sink writing unified-schema shards + quarantine into a staging folder.

    Each write task returns its :class:`BlockResult` as a dict; after the write the
    driver finds them all in :attr:`results`.
    """

    def __init__(self, staging: str, compression: str = "zstd") -> None:
        self.staging = staging
        self.compression = compression
        self.results: list[dict[str, Any]] = []

    def write(self, blocks: Iterable[Block], ctx) -> dict[str, Any]:
        tables = [BlockAccessor.for_block(b).to_arrow() for b in blocks]
        tables = [t for t in tables if t.num_rows]
        if not tables:
            return BlockResult().as_dict()
        table = pa.concat_tables(
            [t.select(list(INTERNAL_SCHEMA.names)).cast(INTERNAL_SCHEMA) for t in tables]
        )
        tag = f"{ctx.task_idx:05d}-{uuid.uuid4().hex[:8]}"
        return write_block(table, self.staging, tag, self.compression).as_dict()

    def on_write_complete(self, write_result: WriteResult[dict]) -> None:
        self.results = list(write_result.write_returns)

    def get_name(self) -> str:
        return "UnifiedParquet"
