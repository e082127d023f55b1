"""Index cases and the knowledge base into Milvus with Ray Data actor pools.

Cases: preprocessed Parquet rows (image + report) -> a pool of CLIP actors
(``map_batches`` with a callable class) -> image and report vectors -> upserted by
``sample_id`` into the ``cases`` collection (HNSW). Knowledge: the Markdown corpus ->
chunks -> sentence embeddings (in the driver for a small corpus, else a pool of
embedder actors) -> the ``knowledge`` collection (dense + BM25).
Both collections are flushed and their indexes warmed, so the first user query is fast.

    python -m jobs.index --config jobs/configs/index_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import numpy as np
import pandas as pd

from medray.config import parse_args, to_dict
from medray.paths import repo_root
from medray.retrieval.store import MilvusSettings
from medray.runtime import setup_logging
from medray.train.settings import RunSettings

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "index_tiny.yaml"
CASE_COLUMNS = [
    "sample_id",
    "image",
    "findings",
    "impression",
    "labels",
    "modality",
    "organ",
    "split",
    "source",
    "study_id",
    "task",
]


@dataclass(frozen=True)
class CasesSettings:
    """Which preprocessed rows become cases, embedded with which CLIP model."""

    enabled: bool = True
    input: str = ""  # preprocessed Parquet folder (output of jobs.preprocess)
    clip_model: str = "tiny-clip"  # preset, hub id or a train_clip checkpoint folder
    tasks: tuple[str, ...] = ("report",)
    splits: tuple[str, ...] = ()  # empty: every split
    text: Literal["report", "findings", "impression"] = "report"
    batch_size: int = 64
    concurrency: int = 2  # CLIP actors
    cpus_per_actor: float = 1.0
    gpus_per_actor: float = 0.0
    drop_existing: bool = False


@dataclass(frozen=True)
class KnowledgeSettings:
    """The knowledge corpus and its sentence embedder."""

    enabled: bool = True
    corpus_dir: str = "datasets/knowledge"  # relative to the repo, or absolute
    text_model: str = "minilm-l6"
    chunk_size: int = 900
    chunk_overlap: int = 120
    drop_existing: bool = False
    # Up to this many chunks are embedded in the driver, which loads the embedder anyway
    # (for its dimension): a Ray Data actor costs ~15-20 s to start on 2 cores, more than
    # embedding a few hundred chunks. Larger corpora go through a pool of ``concurrency``
    # embedder actors. 0: always the pool.
    driver_max_chunks: int = 512
    concurrency: int = 1


@dataclass(frozen=True)
class IndexConfig:
    """Index cases and knowledge into Milvus."""

    run: RunSettings = field(default_factory=lambda: RunSettings(name="index"))
    milvus: MilvusSettings = field(default_factory=MilvusSettings)
    cases: CasesSettings = field(default_factory=CasesSettings)
    knowledge: KnowledgeSettings = field(default_factory=KnowledgeSettings)


class TextEmbedder:
    """Ray Data actor: knowledge chunks (pandas) -> chunks with a dense vector."""

    def __init__(self, text_model: str) -> None:
        from medray.models.encoders import TextEncoder

        self.encoder = TextEncoder(text_model)

    def __call__(self, batch):
        return self.embed(self.encoder, batch)

    @staticmethod
    def embed(encoder, batch):
        batch["dense"] = [v.tolist() for v in encoder.encode(batch["text"].tolist())]
        return batch


def _rows(blocks: Iterable, columns: list[str]) -> Iterable[list[dict[str, Any]]]:
    from ray.data.block import BlockAccessor

    for block in blocks:
        df = BlockAccessor.for_block(block).to_pandas()
        yield [
            {
                c: (v.tolist() if isinstance(v, np.ndarray) else v)
                for c, v in zip(columns, values, strict=True)
            }
            for values in df[columns].itertuples(index=False, name=None)
        ]


def _make_sink(kind: str, settings: MilvusSettings, columns: list[str]):
    from ray.data import Datasink

    class MilvusSink(Datasink):
        """Upserts each block into a Milvus collection; returns the rows written."""

        def write(self, blocks, ctx) -> int:
            from medray.retrieval.store import CaseStore, KnowledgeStore

            store = (CaseStore if kind == "cases" else KnowledgeStore)(settings)
            try:
                return sum(store.upsert(rows) for rows in _rows(blocks, columns))
            finally:
                store.client.close()

    return MilvusSink()


def index_cases(cfg: IndexConfig) -> dict[str, Any]:
    import ray

    from medray.models.encoders import ClipBatchEncoder, ClipEncoder
    from medray.retrieval.store import CaseStore

    c = cfg.cases
    if not c.input:
        cases_input(c)  # raises, naming the fix
    clip_model = str(Path(c.clip_model).resolve()) if Path(c.clip_model).exists() else c.clip_model
    dim = ClipEncoder(clip_model).dim
    store = CaseStore(cfg.milvus)
    store.create(
        dim,
        {"clip_model": clip_model, "text": c.text, "created_by": "jobs.index"},
        drop_existing=c.drop_existing,
    )
    recorded = store.metadata().get("clip_model")
    if recorded != clip_model:
        raise ValueError(
            f"collection {store.name!r} was indexed with {recorded!r}, not {clip_model!r}: vectors would not be "
            "comparable; set cases.drop_existing=true or use another collection name"
        )

    from medray.data.output import data_files

    # The files the manifest lists, not the folder: quarantine and report files live there too.
    ds = ray.data.read_parquet(data_files(c.input), columns=CASE_COLUMNS)
    tasks, splits = set(c.tasks), set(c.splits)
    ds = ds.filter(lambda r: r["task"] in tasks and (not splits or r["split"] in splits))
    embedded = ds.map_batches(
        ClipBatchEncoder,
        fn_constructor_kwargs={
            "clip_model": clip_model,
            "text": c.text,
            "device": "cuda" if c.gpus_per_actor else "cpu",
        },
        batch_size=c.batch_size,
        batch_format="pandas",
        concurrency=c.concurrency,
        num_cpus=c.cpus_per_actor,
        num_gpus=c.gpus_per_actor,
    ).materialize()
    errors = (
        embedded.filter(lambda r: bool(r["error"]))
        .select_columns(["sample_id", "error"])
        .take_all()
    )
    good = embedded.filter(lambda r: not r["error"]).drop_columns(
        ["error", "task", "findings", "impression"]
    )
    columns = [
        "sample_id",
        "image_vec",
        "text_vec",
        "report",
        "labels",
        "modality",
        "organ",
        "split",
        "source",
        "study_id",
    ]
    good.write_datasink(_make_sink("cases", cfg.milvus, columns))
    warm_s = store.warm()  # flush, wait for the indexes, both vector fields searched once
    first_query_s, steady = _query_seconds(store, dim)
    rows_in = embedded.count()  # materialised: from its metadata, no pass over the rows
    return {
        "collection": store.name,
        "clip_model": clip_model,
        "dim": dim,
        "index": store.built_indexes(["image_vec", "text_vec"]),
        "rows_in": rows_in,
        "rows_indexed": rows_in - len(errors),  # what the sink wrote: every row without error
        "collection_rows": store.count(),
        "errors": errors[:20],
        "error_count": len(errors),
        "warm_seconds": round(warm_s, 3),
        "first_query_s": round(first_query_s, 4),
        "steady_query_s": round(steady, 4),
    }


def _query_seconds(store, dim: int, n: int = 6) -> tuple[float, float]:
    """Latency of the first query after warming, and the median of the next ones."""
    rng = np.random.default_rng(0)
    times = []
    for _ in range(n):
        v = rng.normal(size=dim)
        t0 = time.perf_counter()
        store.search((v / np.linalg.norm(v)).tolist(), "image", k=5)
        times.append(time.perf_counter() - t0)
    return times[0], float(np.median(times[1:]))


def index_knowledge(cfg: IndexConfig) -> dict[str, Any]:
    import ray

    from medray.models.encoders import TextEncoder
    from medray.retrieval.corpus import load_corpus
    from medray.retrieval.store import KnowledgeStore

    k = cfg.knowledge
    corpus = Path(k.corpus_dir)
    corpus = corpus if corpus.is_absolute() else repo_root() / corpus
    chunks = load_corpus(corpus, k.chunk_size, k.chunk_overlap)
    store = KnowledgeStore(cfg.milvus)
    encoder = TextEncoder(k.text_model)
    store.create(
        encoder.dim,
        {"text_model": k.text_model, "corpus": corpus.name, "created_by": "jobs.index"},
        drop_existing=k.drop_existing,
    )
    columns = ["chunk_id", "text", "dense", "title", "heading", "source", "topic", "references"]
    rows = [c.to_row() for c in chunks]
    in_driver = len(rows) <= k.driver_max_chunks
    if in_driver:  # through TextEmbedder.embed, as the pool's actors
        batch = TextEmbedder.embed(encoder, pd.DataFrame(rows))
        store.upsert(batch[columns].to_dict("records"))
    else:
        ray.data.from_items(rows).map_batches(
            TextEmbedder,
            fn_constructor_kwargs={"text_model": k.text_model},
            batch_format="pandas",
            concurrency=k.concurrency,
            batch_size=64,
        ).write_datasink(_make_sink("knowledge", cfg.milvus, columns))
    store.flush()
    return {
        "collection": store.name,
        "text_model": k.text_model,
        "chunks": len(chunks),
        "embedded_by": "driver" if in_driver else f"{k.concurrency} Ray Data actor(s)",
        "index": store.built_indexes(["dense"]),
        "collection_rows": store.count(),
        "files": len({c.source for c in chunks}),
    }


class InputError(ValueError):
    """The job's input is missing or incomplete; the message says what to run or set."""


def cases_input(c: CasesSettings) -> str:
    """``cases.input`` with ``$MEDRAY_HOME`` and ``~`` expanded, checked to be a complete
    preprocessed output, before Ray starts or anything is read.

    Raises:
        InputError: it is empty, missing or not a committed ``jobs.preprocess`` output.
    """
    from medray.data import io
    from medray.data.output import OutputError, load_manifest

    raw = c.input.strip()
    if not raw:
        raise InputError(
            "cases.input is empty: set it to a jobs.preprocess output folder, e.g. "
            "cases.input=$MEDRAY_HOME/data/synthetic, or cases.enabled=false to index "
            "only the knowledge base"
        )
    location = io.resolve_location(raw)  # expands $MEDRAY_HOME, ~ and $VARS
    if not io.exists(location):
        raise InputError(
            f"cases.input {location} does not exist: run the preprocess job first "
            "(`medray job submit -- python -m jobs.preprocess` writes $MEDRAY_HOME/data/synthetic) "
            "or point cases.input at its output"
        )
    try:
        load_manifest(location)
    except OutputError as e:
        raise InputError(f"cases.input: {e}") from None
    return location


def milvus_server_uri(settings: MilvusSettings) -> str:
    """The resolved Milvus URI, checked to name a server the job's Ray workers can reach.

    Raises:
        InputError: it is a Milvus Lite *file* (``./milvus.db``): one process at a time can
            open one, and this job writes from Ray Data workers, which would wait on the
            file's lock for ever.
    """
    uri = settings.resolved_uri()
    if urlsplit(uri).scheme.lower() not in ("http", "https", "tcp", "grpc", "unix"):
        raise InputError(
            f"milvus.uri {uri!r} is a Milvus Lite file, which only one process can open; the "
            "index job writes from Ray workers: run `medray cluster up` (it starts a Milvus "
            "Lite server and sets $MEDRAY_MILVUS_URI) or set milvus.uri to a server "
            "(http://host:19530)"
        )
    return uri


def main(cfg: IndexConfig) -> dict[str, Any]:
    from medray.retrieval.store import connect, detect_backend
    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path

    milvus_server_uri(cfg.milvus)  # before Ray starts, as the input checks below
    if cfg.cases.enabled:  # before Ray starts: a wrong path fails in a second, not after it
        cfg = replace(cfg, cases=replace(cfg.cases, input=cases_input(cfg.cases)))
    init_ray()
    client = connect(cfg.milvus)  # fail fast with a clear message if Milvus is down
    t0 = time.perf_counter()
    summary: dict[str, Any] = {
        "milvus_uri": cfg.milvus.resolved_uri(),
        "milvus": cfg.milvus.display_uri(),
        "milvus_backend": detect_backend(cfg.milvus, client),
    }
    client.close()
    if cfg.cases.enabled:
        summary["cases"] = index_cases(cfg)
    if cfg.knowledge.enabled:
        summary["knowledge"] = index_knowledge(cfg)
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["config"] = to_dict(cfg)
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print(summary, out_dir)
    return summary


def index_line(indexes: dict[str, dict[str, Any]]) -> str:
    """``HNSW COSINE (image_vec, text_vec)``: the index type the server reports per field."""
    by_kind: dict[str, list[str]] = {}
    for name, info in indexes.items():
        kind = f"{info.get('index_type', '?')} {info.get('metric_type', '')}".strip()
        by_kind.setdefault(kind, []).append(name)
    return "; ".join(f"{kind} ({', '.join(names)})" for kind, names in by_kind.items())


def _print(s: dict[str, Any], out_dir: Path) -> None:
    print("\n=== MedRay index summary ===")
    print(f"Milvus: {s['milvus']} ({s['milvus_backend']})")
    if "cases" in s:
        c = s["cases"]
        print(
            f"cases: {c['rows_indexed']} of {c['rows_in']} rows indexed ({c['error_count']} unreadable), "
            f"collection holds {c['collection_rows']}, index {index_line(c['index'])}; first query "
            f"{c['first_query_s'] * 1000:.0f} ms, steady {c['steady_query_s'] * 1000:.0f} ms"
        )
    if "knowledge" in s:
        k = s["knowledge"]
        print(
            f"knowledge: {k['chunks']} chunks from {k['files']} files (embedded by "
            f"{k['embedded_by']}), collection holds {k['collection_rows']}, index "
            f"{index_line(k['index'])}"
        )
    print(f"RESULTS: {out_dir}/summary.json")


if __name__ == "__main__":
    setup_logging()
    config = parse_args(
        IndexConfig, sys.argv[1:], prog="python -m jobs.index", default_config=DEFAULT_CONFIG
    )
    try:
        main(config)
    except InputError as e:
        sys.exit(f"python -m jobs.index: {e}")
