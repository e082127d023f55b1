"""Listing the input: every source's raw records, as compact JSON strings, on the driver.

This is the cheap first step of preprocessing: readers parse annotation files only (no
image is opened), and each record becomes one short JSON string (~0.3-1 KB), which is
what the driver holds: O(records) in small strings, never pixels. The heavy work is
parallel in Ray Data afterwards.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field

from medray.data import io
from medray.data.config import PreprocessConfig, SourceSpec
from medray.data.readers import read_source
from medray.data.records import LayoutError, rejected

log = logging.getLogger(__name__)


@dataclass
class Collected:
    """The raw records of every source, plus what was counted on the way."""

    items: list[str] = field(default_factory=list)  # one JSON record each
    per_source: Counter = field(default_factory=Counter)  # source -> records in
    filtered: dict[str, Counter] = field(default_factory=dict)  # source -> reason -> rows
    roots: dict[str, str] = field(default_factory=dict)  # source -> resolved location
    generated: list[str] = field(default_factory=list)  # sources synthesised first


def source_root(spec: SourceSpec) -> str:
    """The resolved location of a source (see :func:`medray.data.io.resolve_location`)."""
    return io.resolve_location(spec.path)


def prepare_synthetic(spec: SourceSpec, root: str) -> bool:
    """Generate a source's synthetic data first when it asks for it (``synth_n``)."""
    if not spec.synth_n:
        return False
    if io.is_uri(root):
        raise LayoutError(
            f"source {spec.source_name!r}: synthetic data is generated on local paths only, not {root}"
        )
    from medray.data.synth import ensure_synthetic

    return ensure_synthetic(
        spec.kind, root, spec.synth_n, spec.synth_seed, spec.synth_image_size or None
    )


def collect_records(cfg: PreprocessConfig) -> Collected:
    """Read every source's annotations into JSON records (see :mod:`medray.data.records`).

    Each record gets ``i``, its position in the input (records of one source sorted by
    image path, so that questions about one image are processed together). A ``sample_id`` seen twice (a
    source listing the same question twice) is a rejected record, not a silent overwrite.

    Raises:
        LayoutError: a source folder is missing or lacks its dataset's files.
    """
    out = Collected()
    seen: set[str] = set()
    for spec in cfg.sources:
        name = spec.source_name
        root = source_root(spec)
        if prepare_synthetic(spec, root):
            out.generated.append(name)
        if not io.exists(root):
            raise LayoutError(f"source {name!r}: {root} does not exist (path: {spec.path!r})")
        out.roots[name] = root
        filtered: Counter = Counter()
        # Questions about the same image next to each other: they then share a block,
        # where the image is decoded once. Stable, so the order is otherwise the source's.
        recs = sorted(
            read_source(spec, root, cfg.split, filtered), key=lambda r: r.get("image") or ""
        )
        for rec in recs:
            sid = rec.get("sample_id")
            if sid is not None:
                if sid in seen:
                    rec = rejected(name, root, rec["original_id"], f"duplicate sample_id: {sid}")
                else:
                    seen.add(sid)
            rec["i"] = len(out.items)
            out.items.append(json.dumps(rec, ensure_ascii=False, separators=(",", ":")))
            out.per_source[name] += 1
        out.filtered[name] = filtered
        log.info(
            "source %s: %d records from %s%s",
            name,
            out.per_source[name],
            root,
            f" ({dict(filtered)} filtered out)" if filtered else "",
        )
    return out
