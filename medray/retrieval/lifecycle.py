"""Collection lifecycle against Milvus: create (tolerating a concurrent creator), load
(retrying only a half-written index file), and waiting for index builds.

Milvus Lite builds a flushed segment's index of a *loaded* collection in a background
thread and writes the index file in place; a release followed by a load at that moment
reads or rebuilds the same file half written (``faiss::read_index ... read error``).
MedRay therefore never releases a loaded collection: ``CaseStore.warm`` flushes and
waits with :func:`wait_for_index` instead. The same path serves a Milvus server.
"""

from __future__ import annotations

import logging
import time

from medray.retrieval.connection import RetrievalError

log = logging.getLogger(__name__)

# faiss's message for an index file shorter than its header says: Milvus Lite read a
# sidecar while its background builder was still writing it (see ``load``).
_HALF_WRITTEN = "read error"
LOAD_ATTEMPTS = 3


def load(client, name: str, attempts: int = LOAD_ATTEMPTS) -> None:
    """``load_collection(name)``, retrying only a half-written index file, at most
    ``attempts`` times; RetrievalError naming the collection and the fix otherwise.

    Milvus Lite builds a new segment's index in a background thread while the collection
    is loaded, and writes it to a file in place; a ``load`` of the same collection at
    that moment (after a ``release``) builds the same file again, or reads it half
    written. MedRay never releases a loaded collection, so its own loads cannot meet a
    build in flight; another client that releases and reloads can, and then a second
    try after the writer finished reads the whole file.
    """
    from pymilvus.exceptions import MilvusException

    for attempt in range(1, attempts + 1):
        try:
            client.load_collection(name)
            return
        except MilvusException as e:
            if _HALF_WRITTEN not in str(e):
                raise RetrievalError(f"cannot load collection {name!r}: {e}") from None
            if attempt == attempts:
                raise RetrievalError(
                    f"cannot load collection {name!r}: an index file stays unreadable after "
                    f"{attempts} tries ({str(e)[:300]}); the file is damaged: rebuild the "
                    "collection with the index job (cases.drop_existing=true / "
                    "knowledge.drop_existing=true)"
                ) from None
            log.warning(
                "collection %r: an index file was being written while it loaded; "
                "loading again (try %d of %d)",
                name,
                attempt + 1,
                attempts,
            )
            time.sleep(float(attempt))


def _ensure_loaded(client, name: str) -> None:
    """After a server restart collections come back released; searches need them loaded."""
    from pymilvus.client.types import LoadState

    if client.get_load_state(name)["state"] != LoadState.Loaded:
        load(client, name)


def wait_for_index(client, name: str, timeout_s: float) -> None:
    """Block until Milvus reports every row of ``name``'s indexes built; RetrievalError
    naming the collection after ``timeout_s``.

    A Milvus server builds the indexes of flushed segments asynchronously and reports the
    rows still to index (``pending_index_rows``); a loaded collection switches to each
    segment's index once it is built, without a release. Milvus Lite reports every index
    finished at once and indexes new segments of a loaded collection in the background
    (searches scan those segments exactly until then).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pending = {}
        for index in client.list_indexes(name):
            d = client.describe_index(name, index_name=index) or {}
            rows = int(d.get("pending_index_rows") or 0)
            if rows or str(d.get("state", "Finished")) not in ("Finished", "IndexState.Finished"):
                pending[index] = f"{d.get('state')}, {rows} rows pending"
        if not pending:
            return
        if time.monotonic() >= deadline:
            raise RetrievalError(
                f"collection {name!r}: indexes not built after {timeout_s:.0f} s ({pending}); "
                "Milvus's index nodes may be overloaded or down: check the Milvus server, or "
                "raise milvus.index_timeout_s"
            )
        time.sleep(min(2.0, max(0.0, deadline - time.monotonic())))


def _create(client, name: str, schema, params, wait_s: float = 10.0) -> None:
    """``create_collection``, where another client creating ``name`` at the same moment
    is not an error (two index jobs, or the first two collections of a new server, both
    creating the metadata collection; Milvus Lite then answers "already exists", or "File
    exists" while the other creation is still under way, so this waits up to ``wait_s``
    for it to finish); the caller's checks of the existing collection follow."""
    from pymilvus.exceptions import MilvusException

    try:
        client.create_collection(name, schema=schema, index_params=params)
        return
    except MilvusException as e:
        error = e
    deadline = time.monotonic() + wait_s
    # The other creator registers the collection, then its indexes: wait for both.
    while not (client.has_collection(name) and client.list_indexes(name)):
        if time.monotonic() >= deadline:
            raise error
        time.sleep(0.2)
    log.info("collection %r was created by another client at the same time", name)
