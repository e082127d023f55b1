"""What both Milvus collections share: the metadata record of the model behind their
vectors, filters, vector checks, index building and hit reading (:class:`Collection`)."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from medray.retrieval.connection import (
    MilvusSettings,
    RetrievalError,
    VectorIndex,
    connect,
    detect_backend,
    search_params,
    vector_index,
)
from medray.retrieval.lifecycle import (
    _create,
    _ensure_loaded,
)

META_COLLECTION = "medray_collections"


@dataclass(frozen=True)
class Hit:
    """One search result: primary key, similarity score (higher is better), stored fields."""

    id: str
    score: float
    payload: dict[str, Any] = field(default_factory=dict)


def _quote(value: Any) -> str:
    """A Milvus filter literal; strings are JSON-quoted so they cannot break the expression."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))


def build_filter(filters: Mapping[str, Any] | None, allowed: Mapping[str, str]) -> str:
    """Milvus boolean expression from ``{"modality": "X-Ray", "labels": ["effusion"]}``.

    ``allowed`` maps field name to kind: ``scalar`` (equality, or ``in`` for a list) or
    ``array`` (matches if the array holds any of the values). Unknown fields are refused.
    """
    if not filters:
        return ""
    parts = []
    for name, value in filters.items():
        if name not in allowed:
            raise RetrievalError(
                f"cannot filter on {name!r}; filterable fields: {', '.join(sorted(allowed))}"
            )
        values = list(value) if isinstance(value, list | tuple | set) else [value]
        if not values:
            continue
        if allowed[name] == "array":
            parts.append(f"ARRAY_CONTAINS_ANY({name}, [{', '.join(_quote(v) for v in values)}])")
        elif len(values) == 1:
            parts.append(f"{name} == {_quote(values[0])}")
        else:
            parts.append(f"{name} in [{', '.join(_quote(v) for v in values)}]")
    return " and ".join(parts)


def check_vector(vector: Sequence[float], dim: int, what: str) -> list[float]:
    vec = [float(x) for x in vector]
    if not vec:
        raise RetrievalError(f"empty {what} vector")
    if len(vec) != dim:
        raise RetrievalError(
            f"{what} vector has {len(vec)} dimensions, the collection expects {dim}"
        )
    return vec


class Collection:
    """Shared plumbing: existence checks, recorded metadata, loading, flush, count."""

    name: str

    def __init__(
        self, settings: MilvusSettings, name: str, client=None, meta_ttl_s: float = 0.0
    ) -> None:
        self.settings = settings
        self.name = name
        self.client = client or connect(settings)
        self._loaded = False
        # Existence + metadata checks cost four round trips; a long-lived server may keep
        # the result for ``meta_ttl_s`` seconds (0: check before every search).
        self.meta_ttl_s = meta_ttl_s
        self._meta: tuple[float, dict[str, Any]] | None = None

    def exists(self) -> bool:
        return self.client.has_collection(self.name)

    def _require(self) -> dict[str, Any]:
        if self._meta is not None and time.monotonic() - self._meta[0] < self.meta_ttl_s:
            return self._meta[1]
        if not self.exists():
            raise RetrievalError(
                f"collection {self.name!r} does not exist at {self.settings.display_uri()}; "
                "build it with the index job (python -m jobs.index)"
            )
        if not self._loaded:
            _ensure_loaded(self.client, self.name)
            self._loaded = True
        meta = self.metadata()
        if self.meta_ttl_s > 0:
            self._meta = (time.monotonic(), meta)
        return meta

    def metadata(self) -> dict[str, Any]:
        """What the index job recorded: the embedding model(s) and dimensions."""
        if not self.client.has_collection(META_COLLECTION):
            return {}
        _ensure_loaded(self.client, META_COLLECTION)
        rows = self.client.get(META_COLLECTION, ids=[self.name], output_fields=["info"])
        return json.loads(rows[0]["info"]) if rows else {}

    def _record(self, info: Mapping[str, Any]) -> None:
        """Keep ``info`` in the metadata collection (Milvus Lite drops collection
        descriptions on restart; a collection of its own persists like any data)."""
        from pymilvus import DataType, MilvusClient

        if not self.client.has_collection(META_COLLECTION):
            schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
            schema.add_field("name", DataType.VARCHAR, is_primary=True, max_length=256)
            schema.add_field("info", DataType.VARCHAR, max_length=8192)
            schema.add_field("unused", DataType.FLOAT_VECTOR, dim=2)  # Milvus needs a vector field
            params = self.client.prepare_index_params()
            params.add_index("unused", index_type="FLAT", metric_type="L2")
            _create(self.client, META_COLLECTION, schema, params)
        self._meta = None
        self.client.upsert(
            META_COLLECTION,
            [{"name": self.name, "info": json.dumps(dict(info)), "unused": [0.0, 0.0]}],
        )
        # No flush: the upsert is durable without one (Milvus Lite's write-ahead log, a
        # server's message log), and Milvus Lite races when several clients flush this
        # shared collection at once (its flush freezes the memtable outside its lock:
        # "current_seq is monotonic; tried to set 1 < 2").

    def _keep_existing(self, dim: int, drop_existing: bool) -> bool:
        """Before ``create``: drop the collection if asked; True if it exists (same ``dim``)."""
        if drop_existing:
            self.drop()
        if not self.exists():
            return False
        have = self.metadata().get("dim")
        if have is not None and have != dim:
            raise RetrievalError(
                f"collection {self.name!r} holds {have}-d vectors, not {dim}-d; "
                "index into another collection or drop this one (index.drop_existing=true)"
            )
        return True

    def drop(self) -> None:
        self._meta = None
        if self.exists():
            self.client.drop_collection(self.name)
        if self.client.has_collection(META_COLLECTION):
            self.client.delete(META_COLLECTION, ids=[self.name])

    def count(self) -> int:
        self._require()
        res = self.client.query(self.name, filter="", output_fields=["count(*)"])
        return int(res[0]["count(*)"])

    def flush(self) -> None:
        self.client.flush(self.name)

    def vector_index(self) -> VectorIndex:
        """The dense index this collection gets on this backend (``connection.vector_index``)."""
        return vector_index(self.settings, detect_backend(self.settings, self.client))

    def _index(self, params, field_name: str, index: VectorIndex) -> None:
        params.add_index(
            field_name,
            index_type=index.index_type,
            metric_type=index.metric_type,
            params=dict(index.build_params),
        )

    def _search_params(self, meta: Mapping[str, Any], k: int, ef: int | None = None):
        """Search parameters for the index the collection was built with (recorded at create;
        collections made before the record are HNSW)."""
        settings = self.settings if ef is None else replace(self.settings, ef=ef)
        return search_params(str(meta.get("index_type", "HNSW")), k, settings)

    def built_indexes(self, fields: Sequence[str]) -> dict[str, dict[str, Any]]:
        """What the server reports for each vector field's index: type, metric, parameters."""
        out = {}
        for name in fields:
            info = self.client.describe_index(self.name, index_name=name) or {}
            out[name] = {
                k: v for k, v in info.items() if k not in ("field_name", "index_name", "state")
            }
        return out

    def _hits(self, result, pk: str, i: int = 0) -> list[Hit]:
        return [
            Hit(
                id=str(h[pk]) if pk in h else str(h.get("id")),
                score=float(h["distance"]),
                payload=dict(h.get("entity", {})),
            )
            for h in result[i]
        ]

    def _hits_many(self, result, pk: str, n: int) -> list[list[Hit]]:
        if len(result) != n:
            raise RetrievalError(f"Milvus answered {len(result)} result lists for {n} queries")
        return [self._hits(result, pk, i) for i in range(n)]
