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
import logging
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medray.retrieval import CaseStore, Hit, KnowledgeStore, MilvusSettings, RetrievalError, connect

log = logging.getLogger(__name__)


class RetrievalUnavailable(RuntimeError):
    """Retrieval cannot answer now (Milvus down, collection missing or mismatched)."""


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
    """

    def __init__(
        self, settings: MilvusSettings, clip_model: str = "", text_model: str = ""
    ) -> None:
        self.settings = settings
        self.clip_model = clip_model
        self.text_model = text_model
        self._lock = threading.Lock()
        self._cases: CaseStore | None = None
        self._knowledge: KnowledgeStore | None = None

    def _stores(self) -> tuple[CaseStore, KnowledgeStore]:
        with self._lock:
            if self._cases is None or self._knowledge is None:
                client = self._connect()
                self._cases = CaseStore(self.settings, client)
                self._knowledge = KnowledgeStore(self.settings, client)
            return self._cases, self._knowledge

    def _connect(self):
        """A client with a connection of its own.

        pymilvus shares one gRPC connection per address in a process; once the server
        drops it (e.g. a GOAWAY for keep-alive pings) and recovery fails, every new
        shared client gets the broken one. A long-lived replica must be able to
        reconnect, so it uses a dedicated connection and makes a new one after a failure.
        """
        from pymilvus import MilvusClient

        uri = self.settings.resolved_uri()
        try:
            client = MilvusClient(
                uri=uri,
                token=self.settings.resolved_token(),
                timeout=self.settings.timeout_s,
                dedicated=True,
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

    def _call(self, what: str, fn):
        try:
            return fn()
        except RetrievalUnavailable:
            raise
        except RetrievalError as e:
            self._reset()
            raise RetrievalUnavailable(f"{what} unavailable: {e}") from None
        except Exception as e:  # pymilvus/gRPC errors after a connection was made
            self._reset()
            log.warning("%s failed: %s", what, type(e).__name__)
            raise RetrievalUnavailable(f"{what} unavailable: {type(e).__name__}: {e}") from None

    def similar_cases(
        self,
        vector: Sequence[float],
        field: Literal["image", "text"] = "image",
        k: int = 5,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Cases nearest to a CLIP ``vector`` by their image or report vectors."""

        def run():
            cases, _ = self._stores()
            meta = cases._require()
            self._check_model(meta, "clip_model", self.clip_model, cases.name)
            return [hit_dict(h) for h in cases.search(list(vector), field, k, filters)]

        return self._call("similar-case search", run)

    def knowledge(
        self, query: str, dense_vector: Sequence[float], k: int = 5
    ) -> list[dict[str, Any]]:
        """Hybrid (dense + BM25, RRF) knowledge search."""

        def run():
            _, kb = self._stores()
            meta = kb._require()
            self._check_model(meta, "text_model", self.text_model, kb.name)
            return [hit_dict(h) for h in kb.hybrid_search(query, list(dense_vector), k)]

        return self._call("knowledge search", run)

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
