"""The Retriever: similar cases and knowledge from Milvus, for vectors computed elsewhere.

Wraps ``medray.retrieval`` (``CaseStore.search``, ``KnowledgeStore.hybrid_search``).
Milvus may be down or a collection missing when the app starts, so the connection is
made on first use and retried on later calls; every failure is a
:class:`RetrievalUnavailable` with a message for the client, never a crash. Each
collection records the model that embedded it; a query vector from another model
would return nonsense, so a mismatch is reported instead.

Faults: every Milvus call carries ``timeout=`` (:class:`TimedClient`; pymilvus otherwise
retries a dead server for minutes), so a failed search costs at most two calls' timeouts
(the call and one reconnect). After a failure to connect, calls fail at once for
``retry_after_s`` (no caller waits on a dead server); then the next call tries again, so
retrieval comes back by itself when Milvus does. Only one thread connects at a time and
the others wait for it at most one timeout; no lock is held around a Milvus call.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from medray.retrieval import CaseStore, Hit, KnowledgeStore, MilvusSettings, RetrievalError
from medray.retrieval.collection import build_filter
from medray.retrieval.store import CASE_FILTERS

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


# Calls whose work is a wait of its own (loading a collection after a server restart):
# they get at least this long, searches and checks get the retriever's timeout.
_SLOW_CALLS = {"load_collection": 20.0}


class TimedClient:
    """A ``MilvusClient`` whose every call carries ``timeout=`` unless given one.

    pymilvus retries a failing call (75 times, backing off up to 3 s) unless the call has
    a timeout, which bounds the call and its retries together.
    """

    def __init__(self, client, timeout_s: float) -> None:
        self._client = client
        self.timeout_s = timeout_s

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not callable(attr) or not _takes_timeout(attr):
            return attr
        timeout = max(self.timeout_s, _SLOW_CALLS.get(name, 0.0))

        @functools.wraps(attr)
        def call(*args, **kwargs):
            kwargs.setdefault("timeout", timeout)
            return attr(*args, **kwargs)

        return call


def _takes_timeout(fn) -> bool:
    try:
        return "timeout" in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


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
        timeout_s: the longest one Milvus call (connecting included) may take; None:
            ``settings.timeout_s``.
        retry_after_s: after a failed connection, calls fail at once for this long.
    """

    def __init__(
        self,
        settings: MilvusSettings,
        clip_model: str = "",
        text_model: str = "",
        meta_ttl_s: float = 10.0,
        timeout_s: float | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.clip_model = clip_model
        self.text_model = text_model
        self.meta_ttl_s = meta_ttl_s
        self.timeout_s = float(settings.timeout_s if timeout_s is None else timeout_s)
        self.retry_after_s = retry_after_s
        self._lock = threading.Lock()  # guards the fields below; never held around a call
        self._connecting = threading.Lock()  # one thread connects at a time
        self._cases: CaseStore | None = None
        self._knowledge: KnowledgeStore | None = None
        self._down: tuple[float, str] | None = None  # (until, reason) after a failed connect

    def _current(self) -> tuple[CaseStore, KnowledgeStore] | None:
        with self._lock:
            if self._cases is not None and self._knowledge is not None:
                return self._cases, self._knowledge
            if self._down is not None and time.monotonic() < self._down[0]:
                raise RetrievalUnavailable(self._down[1])
            return None

    def _stores(self) -> tuple[CaseStore, KnowledgeStore]:
        stores = self._current()
        if stores is not None:
            return stores
        if not self._connecting.acquire(timeout=self.timeout_s):
            raise RetrievalUnavailable(
                f"cannot reach Milvus at {self.settings.display_uri()}: still connecting"
            )
        try:
            stores = self._current()  # another thread may have connected meanwhile
            if stores is not None:
                return stores
            try:
                client = self._connect()
            except RetrievalUnavailable as e:
                with self._lock:
                    self._down = (time.monotonic() + self.retry_after_s, str(e))
                raise
            cases = CaseStore(self.settings, client, self.meta_ttl_s)
            knowledge = KnowledgeStore(self.settings, client, self.meta_ttl_s)
            with self._lock:
                self._cases, self._knowledge, self._down = cases, knowledge, None
            return cases, knowledge
        finally:
            self._connecting.release()

    def _connect(self) -> TimedClient:
        """A client with a connection of its own, every call bounded by ``timeout_s``.

        pymilvus shares one gRPC connection per address in a process; once the server
        drops it (e.g. a GOAWAY for keep-alive pings) and recovery fails, every new
        shared client gets the broken one. A long-lived replica must be able to
        reconnect, so it uses a dedicated connection and makes a new one after a failure.
        One try, no backoff loop: the next call tries again after ``retry_after_s``.
        """
        from pymilvus import MilvusClient

        try:
            client = MilvusClient(
                **self.settings.client_kwargs(), timeout=self.timeout_s, dedicated=True
            )
            timed = TimedClient(client, self.timeout_s)
            timed.list_collections()
        except Exception as e:
            raise RetrievalUnavailable(
                f"cannot reach Milvus at {self.settings.display_uri()} "
                f"({type(e).__name__}: {str(e)[:200]}); retrieval is skipped until it answers"
            ) from None
        return timed

    def _reset(self) -> None:
        with self._lock:
            cases = self._cases
            self._cases = self._knowledge = None
        if cases is not None:
            with contextlib.suppress(Exception):
                cases.client.close()

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

        A pymilvus/gRPC error that came back quickly after a connection was made (a
        dropped connection, or a collection dropped while its checks were cached) is
        retried once on a fresh connection with fresh checks, so the client gets the
        current reason. A call that ran into its timeout (Milvus hung or gone) is not
        retried: searches skip Milvus for ``retry_after_s``, so a dead server costs one
        timeout.
        """
        t0 = time.monotonic()
        try:
            return fn()
        except RetrievalUnavailable:
            raise  # includes a failed (re)connect: no second try
        except RetrievalError as e:
            self._reset()
            raise RetrievalUnavailable(f"{what} unavailable: {e}") from None
        except Exception as e:
            self._reset()
            retry = retry and time.monotonic() - t0 < self.timeout_s / 2
            log.warning("%s failed: %s%s", what, type(e).__name__, "; retrying" if retry else "")
            if retry:
                return self._call(what, fn, retry=False)
            reason = f"{what} unavailable: {type(e).__name__}: {str(e)[:300]}"
            with self._lock:
                self._down = (time.monotonic() + self.retry_after_s, reason)
            raise RetrievalUnavailable(reason) from None

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
        """Reachability and collection presence (for readiness); at most a few call
        timeouts, at once while Milvus is known to be down."""
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
