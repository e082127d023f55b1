"""After the parallel write: global dedup, quarantine/duplicate reports, the manifest.

Dedup needs the whole dataset, so it runs once all shards are written: every write task
returned a small index entry per row (content key, split, sample id, file, source). The
driver picks one survivor per key (test before validation before train, then the
smallest sample id: deterministic) and rewrites only the shards that hold a dropped
row. Duplicates are rare, so this touches few files; the index costs about 150 bytes
per row on the driver (1.5 GB at ten million rows: beyond that, shard the index by key
prefix across tasks). Nothing is lost without a trace: each dropped row is listed in
``duplicates.jsonl`` with the sample it duplicates.
"""

from __future__ import annotations

import json
import logging
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from medray.data import io
from medray.data.output import write_parquet
from medray.data.records import SPLIT_RANK

log = logging.getLogger(__name__)

IndexEntry = tuple[str, str, str, str, str]  # key, split, sample_id, file, source


@dataclass
class Merged:
    """The write tasks' results added up."""

    files: dict[str, dict[str, int]] = field(
        default_factory=lambda: defaultdict(dict)
    )  # split -> rel -> rows
    quarantine_files: dict[str, int] = field(default_factory=dict)
    index: list[IndexEntry] = field(default_factory=list)
    written: Counter = field(default_factory=Counter)
    quarantined: Counter = field(default_factory=Counter)
    nodes: Counter = field(default_factory=Counter)


def merge_results(results: Iterable[dict[str, Any]]) -> Merged:
    m = Merged()
    for r in results:
        for split, items in r["files"].items():
            for rel, n in items:
                m.files[split][rel] = n
        for rel, n in r["quarantine_files"]:
            m.quarantine_files[rel] = n
        m.index.extend(r["index"])
        m.written.update(r["written"])
        m.quarantined.update(r["quarantined"])
        m.nodes.update(r["nodes"])
    return m


def find_duplicates(index: list[IndexEntry]) -> tuple[dict[str, set[str]], list[dict[str, str]]]:
    """Which rows to drop: ``({file: {sample_id, ...}}, [duplicate records])``.

    The survivor of each content key is the row of the most held-out split (test, then
    validation, then train), ties broken by the smallest ``sample_id``.
    """
    best: dict[str, tuple[int, str]] = {}
    for key, split, sid, _, _ in index:
        cand = (SPLIT_RANK[split], sid)
        cur = best.get(key)
        if cur is None or cand < cur:
            best[key] = cand
    drops: dict[str, set[str]] = defaultdict(set)
    dups = []
    for key, split, sid, rel, src in index:
        keep = best[key][1]
        if sid != keep:
            drops[rel].add(sid)
            dups.append({"sample_id": sid, "source": src, "split": split, "duplicate_of": keep})
    return dict(drops), dups


def drop_rows(staging: str, drops: dict[str, set[str]], merged: Merged, compression: str) -> None:
    """Rewrite each shard in ``drops`` without those rows (delete it when none are left)."""
    for rel, ids in drops.items():
        loc = io.join(staging, rel)
        fs, path = io.filesystem(loc)
        table = pq.read_table(path, filesystem=fs)
        keep = table.filter(pc.invert(pc.is_in(table.column("sample_id"), value_set=_array(ids))))
        split = rel.split("/", 1)[0]
        if keep.num_rows:
            write_parquet(keep, loc, compression)
            merged.files[split][rel] = keep.num_rows
        else:
            fs.delete_file(path)
            del merged.files[split][rel]
        # merged.written counts rows per (source, split, task) as written by the tasks;
        # subtract what dedup removed so the summary counts what the output holds.
        dropped = table.filter(pc.is_in(table.column("sample_id"), value_set=_array(ids)))
        merged.written.subtract(
            (s, split, t)
            for s, t in zip(
                dropped.column("source").to_pylist(),
                dropped.column("task").to_pylist(),
                strict=True,
            )
        )
    merged.written += Counter()  # drop zero entries


def _array(values: set[str]):
    import pyarrow as pa

    return pa.array(sorted(values), type=pa.string())


def write_reports(staging: str, merged: Merged, dups: list[dict[str, str]]) -> None:
    """``quarantine.jsonl`` (all quarantine shards, one object per line) and ``duplicates.jsonl``."""
    lines = []
    for rel in sorted(merged.quarantine_files):
        fs, path = io.filesystem(io.join(staging, rel))
        for row in pq.read_table(path, filesystem=fs).to_pylist():
            lines.append(json.dumps(row, ensure_ascii=False))
    io.write_bytes(
        io.join(staging, "quarantine.jsonl"), ("\n".join(lines) + ("\n" if lines else "")).encode()
    )
    body = "".join(json.dumps(d) + "\n" for d in sorted(dups, key=lambda d: d["sample_id"]))
    io.write_bytes(io.join(staging, "duplicates.jsonl"), body.encode())


def manifest(merged: Merged, counts: dict[str, Any]) -> dict[str, Any]:
    """The ``_SUCCESS`` manifest: every file the output consists of, and its counts."""
    return {
        "files": {s: sorted(files) for s, files in merged.files.items() if files},
        "rows": {s: sum(files.values()) for s, files in merged.files.items() if files},
        "quarantine": sorted(merged.quarantine_files),
        "reports": ["quarantine.jsonl", "duplicates.jsonl", "summary.json"],
        "counts": counts,
    }


def listed_files(man: dict[str, Any]) -> set[str]:
    """Every relative path a manifest accounts for (data, quarantine, reports)."""
    return (
        {rel for files in man["files"].values() for rel in files}
        | set(man["quarantine"])
        | set(man["reports"])
    )
