"""The Retriever: similar cases and knowledge from Milvus, for vectors computed elsewhere.

Wraps ``medray.retrieval`` (``CaseStore.search``, ``KnowledgeStore.hybrid_search``).
Milvus may be down or a collection missing when the app starts, so the connection is
made on first use and retried on later calls; every failure is a
:class:`RetrievalUnavailable` with a message for the client, never a crash. Each
collection records the model that embedded it; a query vector from another model
would return nonsense, so a mismatch is reported instead.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medray.retrieval import CaseStore, Hit, KnowledgeStore, MilvusSettings, RetrievalError, connect
from medray.retrieval.store import CASE_FILTERS, build_filter

log = logging.getLogger(__name__)


class RetrievalUnavailable(RuntimeError):
    """Retrieval cannot answer now (Milvus down, collection missing or mismatched)."""


def _raise_or_return(result):
    if isinstance(result, Exception):
        raise result
    return result


def hit_dict(hit: Hit) -> dict[str, Any]:
    """JSON-ready form of a search hit."""
    return {"id": hit.id, "score": round(float(hit.score), 6), **hit.payload}


class Retriever:
    """Similar-case and knowledge search.

    Args:
        settings: Milvus URI and collection names.
        clip_model: the CLIP model the query vectors come from (checked against the
            cases collection's record; "" skips the check).
        text_model: the sentence embedder of knowledge queries (checked likewise).
        meta_ttl_s: how long a collection's existence and recorded model stay trusted
            before they are checked again (each check is four round trips to Milvus,
            several times the cost of the search itself). Any search error drops the
            connection and the cached checks. 0: check before every search.
    """

    def __init__(
        self,
        settings: MilvusSettings,
        clip_model: str = "",
        text_model: str = "",
        meta_ttl_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.clip_model = clip_model
        self.text_model = text_model
        self.meta_ttl_s = meta_ttl_s
        self._lock = threading.Lock()
        self._cases: CaseStore | None = None
        self._knowledge: KnowledgeStore | None = None

    def _stores(self) -> tuple[CaseStore, KnowledgeStore]:
        with self._lock:
            if self._cases is None or self._knowledge is None:
                client = self._connect()
                self._cases = CaseStore(self.settings, client, self.meta_ttl_s)
                self._knowledge = KnowledgeStore(self.settings, client, self.meta_ttl_s)
            return self._cases, self._knowledge

    def _connect(self):
        """A client with a connection of its own.

        pymilvus shares one gRPC connection per address in a process; once the server
        drops it (e.g. a GOAWAY for keep-alive pings) and recovery fails, every new
        shared client gets the broken one. A long-lived replica must be able to
        reconnect, so it uses a dedicated connection and makes a new one after a failure.
        """
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(
                **self.settings.client_kwargs(), timeout=self.settings.timeout_s, dedicated=True
            )
            client.list_collections()
        except Exception:
            return connect(self.settings)  # raises RetrievalError with the reason
        return client

    def _reset(self) -> None:
        with self._lock:
            if self._cases is not None:
                with contextlib.suppress(Exception):
                    self._cases.client.close()
            self._cases = self._knowledge = None

    @staticmethod
    def _check_model(meta: Mapping[str, Any], key: str, expected: str, collection: str) -> None:
        have = meta.get(key)
        if expected and have and have != expected:
            raise RetrievalUnavailable(
                f"collection {collection!r} was indexed with {key.replace('_', ' ')} {have!r} but "
                f"the app embeds queries with {expected!r}; re-index or configure the same model"
            )

    def _call(self, what: str, fn, retry: bool = True):
        """``fn()``, with Milvus failures as :class:`RetrievalUnavailable`.

        A pymilvus/gRPC error after a connection was made (a dropped connection, or a
        collection dropped while its checks were cached) is retried once on a fresh
        connection with fresh checks, so the client gets the current reason.
        """
        try:
            return fn()
        except RetrievalUnavailable:
            raise
        except RetrievalError as e:
            self._reset()
            raise RetrievalUnavailable(f"{what} unavailable: {e}") from None
        except Exception as e:
            self._reset()
            log.warning("%s failed: %s%s", what, type(e).__name__, "; retrying" if retry else "")
            if retry:
                return self._call(what, fn, retry=False)
            raise RetrievalUnavailable(f"{what} unavailable: {type(e).__name__}: {e}") from None

    def similar_cases(
        self,
        vector: Sequence[float],
        field: Literal["image", "text"] = "image",
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Cases nearest to a CLIP ``vector`` by their image or report vectors."""
        return _raise_or_return(self.similar_cases_many([(vector, field, k, filters)])[0])

    def knowledge(
        self, query: str, dense_vector: Sequence[float], k: int = 5
    ) -> list[dict[str, Any]]:
        """Hybrid (dense + BM25, RRF) knowledge search."""
        return _raise_or_return(self.knowledge_many([(query, dense_vector, k)])[0])

    def similar_cases_many(
        self, requests: Sequence[tuple[Sequence[float], str, int, Mapping[str, Any] | None]]
    ) -> list[list[dict[str, Any]] | RetrievalUnavailable]:
        """:meth:`similar_cases` for many ``(vector, field, k, filters)`` requests: one
        Milvus search per distinct ``(field, k, filters)``. Each entry of the answer is
        that request's hits or the :class:`RetrievalUnavailable` it failed with."""
        groups: dict[str, list[int]] = {}
        for i, (_, field, k, filters) in enumerate(requests):
            key = json.dumps([field, k, filters], sort_keys=True, default=str)
            groups.setdefault(key, []).append(i)
        out: list[Any] = [None] * len(requests)
        for idx in groups.values():
            _, field, k, filters = requests[idx[0]]
            try:  # the request's own mistakes: no reconnect, no effect on other groups
                if field not in ("image", "text"):
                    raise RetrievalError(f"field must be 'image' or 'text', got {field!r}")
                build_filter(filters, CASE_FILTERS)
            except RetrievalError as e:
                for i in idx:
                    out[i] = RetrievalUnavailable(f"similar-case search unavailable: {e}")
                continue

            def run(idx=idx, field=field, k=k, filters=filters):
                cases, _ = self._stores()
                meta = cases._require()
                self._check_model(meta, "clip_model", self.clip_model, cases.name)
                vectors = [list(requests[i][0]) for i in idx]
                return cases.search_many(vectors, field, k, filters)

            for i, hits in zip(
                idx, self._call_many("similar-case search", run, len(idx)), strict=True
            ):
                out[i] = hits
        return out

    def knowledge_many(
        self, requests: Sequence[tuple[str, Sequence[float], int]]
    ) -> list[list[dict[str, Any]] | RetrievalUnavailable]:
        """:meth:`knowledge` for many ``(query, dense_vector, k)`` requests: one hybrid
        search per distinct ``k``; failures per request as in :meth:`similar_cases_many`."""
        out: list[Any] = [None] * len(requests)
        groups: dict[int, list[int]] = {}
        for i, (query, _, k) in enumerate(requests):
            if not query or not query.strip():
                out[i] = RetrievalUnavailable("knowledge search unavailable: empty query")
            else:
                groups.setdefault(int(k), []).append(i)
        for k, idx in groups.items():

            def run(idx=idx, k=k):
                _, kb = self._stores()
                meta = kb._require()
                self._check_model(meta, "text_model", self.text_model, kb.name)
                queries = [requests[i][0] for i in idx]
                vectors = [list(requests[i][1]) for i in idx]
                return kb.hybrid_search_many(queries, vectors, k)

            for i, hits in zip(
                idx, self._call_many("knowledge search", run, len(idx)), strict=True
            ):
                out[i] = hits
        return out

    def _call_many(self, what: str, fn, n: int) -> list[Any]:
        """``fn()``'s hit lists as dicts, or the same error for each of the ``n`` requests."""
        try:
            return [[hit_dict(h) for h in hits] for hits in self._call(what, fn)]
        except RetrievalUnavailable as e:
            return [e] * n

    def status(self) -> dict[str, Any]:
        """Reachability and collection presence (for readiness)."""
        try:
            cases, kb = self._stores()
            return {
                "milvus": "ok",
                "cases": cases.exists(),
                "knowledge": kb.exists(),
            }
        except Exception as e:
            self._reset()
            return {"milvus": f"{type(e).__name__}: {e}", "cases": False, "knowledge": False}
