"""Milvus collections for similar cases and the knowledge base (pymilvus ``MilvusClient``).

``cases``: one row per image — CLIP image and text (report) vectors with HNSW (or, on a
Milvus server, DISKANN) indexes (``connection.vector_index``),
report text, labels, modality, split, source, study id; primary key ``sample_id`` so
upserts never duplicate. ``knowledge``: chunks of the knowledge corpus with a dense
sentence-embedding vector and a BM25 sparse vector computed by Milvus from the text,
searched with RRF-fused hybrid search.

What both collections share (metadata record, filters, index building, reading hits) is
:class:`medray.retrieval.collection.Collection`. Where Milvus is (URI, token, database, TLS) comes from ``MilvusSettings`` and the
environment (``medray.retrieval.connection``): the local Milvus Lite server by default,
any Milvus server or Zilliz Cloud for scale. Each collection records the model
that produced its vectors (in the ``medray_collections`` metadata collection), so
searches embed queries the same way.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np

from medray.retrieval.collection import (
    Collection,
    Hit,
    build_filter,
    check_vector,
)
from medray.retrieval.connection import (  # noqa: F401  (re-exported: the store's public API)
    DEFAULT_URI,
    TOKEN_ENV,
    URI_ENV,
    MilvusSettings,
    RetrievalError,
    VectorIndex,
    connect,
    detect_backend,
    search_params,
    vector_index,
)
from medray.retrieval.lifecycle import (  # noqa: F401  (LOAD_ATTEMPTS, load: re-exported)
    LOAD_ATTEMPTS,
    _create,
    load,
    wait_for_index,
)

CASE_FILTERS = {
    "modality": "scalar",
    "split": "scalar",
    "source": "scalar",
    "labels": "array",
    "organ": "scalar",
}
CASE_OUTPUT = ["report", "labels", "modality", "organ", "split", "source", "study_id"]


class CaseStore(Collection):
    """Similar cases: CLIP image and text vectors of each image, with its report."""

    def __init__(self, settings: MilvusSettings, client=None, meta_ttl_s: float = 0.0) -> None:
        super().__init__(settings, settings.cases_collection, client, meta_ttl_s)

    def create(self, dim: int, metadata: Mapping[str, Any], *, drop_existing: bool = False) -> None:
        """Create the collection and its vector indexes (no-op if it exists with the same dim)."""
        from pymilvus import DataType, MilvusClient

        if self._keep_existing(dim, drop_existing):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("sample_id", DataType.VARCHAR, is_primary=True, max_length=128)
        schema.add_field("image_vec", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("text_vec", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("report", DataType.VARCHAR, max_length=8192)
        schema.add_field(
            "labels", DataType.ARRAY, element_type=DataType.VARCHAR, max_capacity=32, max_length=64
        )
        for name, length in (
            ("modality", 64),
            ("organ", 64),
            ("split", 16),
            ("source", 64),
            ("study_id", 128),
        ):
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        index = self.vector_index()
        params = self.client.prepare_index_params()
        self._index(params, "image_vec", index)
        self._index(params, "text_vec", index)
        _create(self.client, self.name, schema, params)
        self._record({**metadata, "dim": dim, "index_type": index.index_type})

    def upsert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert or replace rows by ``sample_id``; returns the number written."""
        if not rows:
            return 0
        res = self.client.upsert(self.name, [dict(r) for r in rows])
        return int(res["upsert_count"])

    def search(
        self,
        vector: Sequence[float],
        field: Literal["image", "text"] = "image",
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
        ef: int | None = None,
    ) -> list[Hit]:
        """Nearest cases to ``vector`` by their image (``field="image"``) or report vectors."""
        return self.search_many([vector], field, k, filters, ef)[0]

    def search_many(
        self,
        vectors: Sequence[Sequence[float]],
        field: Literal["image", "text"] = "image",
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
        ef: int | None = None,
    ) -> list[list[Hit]]:
        """:meth:`search` for several query vectors in one request (one hit list each)."""
        if field not in ("image", "text"):
            raise RetrievalError(f"field must be 'image' or 'text', got {field!r}")
        if not vectors:
            return []
        meta = self._require()
        vecs = [check_vector(v, int(meta.get("dim", len(v))), "query") for v in vectors]
        res = self.client.search(
            self.name,
            data=vecs,
            anns_field=f"{field}_vec",
            limit=k,
            filter=build_filter(filters, CASE_FILTERS),
            output_fields=CASE_OUTPUT,
            search_params={
                "metric_type": "COSINE",
                "params": self._search_params(meta, k, ef),
            },
        )
        return self._hits_many(res, "sample_id", len(vecs))

    def warm(self, fields: Sequence[Literal["image", "text"]] = ("image", "text")) -> float:
        """Flush, wait until Milvus reports the indexes built and run one search per
        field; returns the seconds.

        The collection stays loaded throughout (:func:`wait_for_index`): releasing and
        loading it again while Milvus Lite's background builder writes a new segment's
        index made the load read a half-written file (``faiss::read_index ... read
        error``), and searches of other clients fail while a collection is released.
        """
        meta = self._require()
        t0 = time.perf_counter()
        self.client.flush(self.name)
        wait_for_index(self.client, self.name, self.settings.index_timeout_s)
        v = np.random.default_rng(0).normal(size=int(meta["dim"]))
        for name in fields:
            self.search((v / np.linalg.norm(v)).tolist(), field=name, k=10)
        return time.perf_counter() - t0

    def get(self, ids: Sequence[str]) -> list[dict[str, Any]]:
        self._require()
        return list(self.client.get(self.name, ids=list(ids), output_fields=CASE_OUTPUT))


KNOWLEDGE_FILTERS = {"source": "scalar", "topic": "scalar"}
KNOWLEDGE_OUTPUT = ["text", "title", "heading", "source", "topic", "references"]


class KnowledgeStore(Collection):
    """Knowledge chunks: dense sentence vectors + BM25 over the text, fused with RRF."""

    def __init__(self, settings: MilvusSettings, client=None, meta_ttl_s: float = 0.0) -> None:
        super().__init__(settings, settings.knowledge_collection, client, meta_ttl_s)

    def create(self, dim: int, metadata: Mapping[str, Any], *, drop_existing: bool = False) -> None:
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        if self._keep_existing(dim, drop_existing):
            return
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("chunk_id", DataType.VARCHAR, is_primary=True, max_length=64)
        schema.add_field("text", DataType.VARCHAR, max_length=8192, enable_analyzer=True)
        schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
        schema.add_field("dense", DataType.FLOAT_VECTOR, dim=dim)
        for name, length in (
            ("title", 256),
            ("heading", 512),
            ("source", 256),
            ("topic", 64),
            ("references", 4096),
        ):
            schema.add_field(name, DataType.VARCHAR, max_length=length)
        schema.add_function(
            Function(
                name="bm25",
                function_type=FunctionType.BM25,
                input_field_names=["text"],
                output_field_names=["sparse"],
            )
        )
        index = self.vector_index()
        params = self.client.prepare_index_params()
        params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
        self._index(params, "dense", index)
        _create(self.client, self.name, schema, params)
        self._record({**metadata, "dim": dim, "index_type": index.index_type})

    def upsert(self, rows: Sequence[Mapping[str, Any]]) -> int:
        if not rows:
            return 0
        return int(self.client.upsert(self.name, [dict(r) for r in rows])["upsert_count"])

    def hybrid_search(
        self,
        query: str,
        dense_vector: Sequence[float],
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
        rrf_k: int = 60,
    ) -> list[Hit]:
        """Dense + BM25 search fused by reciprocal rank (RRF); scores are RRF scores."""
        return self.hybrid_search_many([query], [dense_vector], k, filters, rrf_k)[0]

    def hybrid_search_many(
        self,
        queries: Sequence[str],
        dense_vectors: Sequence[Sequence[float]],
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
        rrf_k: int = 60,
    ) -> list[list[Hit]]:
        """:meth:`hybrid_search` for several queries in one request (one hit list each)."""
        from pymilvus import AnnSearchRequest, RRFRanker

        if len(queries) != len(dense_vectors):
            raise RetrievalError(f"{len(queries)} queries but {len(dense_vectors)} dense vectors")
        if not queries:
            return []
        if any(not q or not q.strip() for q in queries):
            raise RetrievalError("empty query")
        meta = self._require()
        vecs = [check_vector(v, int(meta.get("dim", len(v))), "query") for v in dense_vectors]
        expr = build_filter(filters, KNOWLEDGE_FILTERS)
        reqs = [
            AnnSearchRequest(
                data=vecs,
                anns_field="dense",
                param={"params": self._search_params(meta, k)},
                limit=k * 2,
                expr=expr,
            ),
            # The BM25 leg takes the raw text; Milvus tokenises and scores it.
            AnnSearchRequest(
                data=list(queries), anns_field="sparse", param={}, limit=k * 2, expr=expr
            ),
        ]
        res = self.client.hybrid_search(
            self.name, reqs, ranker=RRFRanker(rrf_k), limit=k, output_fields=KNOWLEDGE_OUTPUT
        )
        return self._hits_many(res, "chunk_id", len(vecs))

    def keyword_search(self, query: str, k: int = 5) -> list[Hit]:
        """BM25 only."""
        if not query or not query.strip():
            raise RetrievalError("empty query")
        self._require()
        res = self.client.search(
            self.name, data=[query], anns_field="sparse", limit=k, output_fields=KNOWLEDGE_OUTPUT
        )
        return self._hits(res, "chunk_id")

    def dense_search(self, dense_vector: Sequence[float], k: int = 5) -> list[Hit]:
        """Dense vector only."""
        meta = self._require()
        vec = check_vector(dense_vector, int(meta.get("dim", len(dense_vector))), "query")
        res = self.client.search(
            self.name, data=[vec], anns_field="dense", limit=k, output_fields=KNOWLEDGE_OUTPUT,
            search_params={"metric_type": "COSINE", "params": self._search_params(meta, k)},
        )  # fmt: skip
        return self._hits(res, "chunk_id")
