"""Where Milvus is, how to reach it, and which vector index each backend builds.

One home for the connection contract of every Milvus user (the stores, the index job, the
Serve app's Retriever, ``medray search``):

- **URI, token, database, TLS**: a :class:`MilvusSettings` field when set, else its
  environment variable (``MEDRAY_MILVUS_URI``, ``MEDRAY_MILVUS_TOKEN``, ``MEDRAY_MILVUS_DB``,
  ``MEDRAY_MILVUS_TLS_*``), else the default (``http://127.0.0.1:19530``, no token, the
  server's default database, no TLS). Finding the *local dev cluster's* Milvus is not done
  here: ``medray cluster up`` exports ``MEDRAY_MILVUS_URI`` to every node and ``medray``
  commands read its state file (``medray.cli.cluster.local_milvus_uri``).
- **Backend**: Milvus Lite (the embedded default: one Python process over FAISS, which
  reports its version as ``milvus_lite-X``) or a Milvus server (standalone, distributed,
  Zilliz Cloud). ``milvus.backend: auto`` asks the server.
- **Vector index per backend** (:func:`vector_index`): HNSW on both (``auto``); DISKANN
  (graph on local NVMe, for collections larger than memory) on a server only.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from medray.config import ConfigError

DEFAULT_URI = "http://127.0.0.1:19530"
URI_ENV = "MEDRAY_MILVUS_URI"
TOKEN_ENV = "MEDRAY_MILVUS_TOKEN"
DB_ENV = "MEDRAY_MILVUS_DB"
TLS_ENV = {
    "ca_pem_path": "MEDRAY_MILVUS_TLS_CA",
    "client_pem_path": "MEDRAY_MILVUS_TLS_CLIENT_CERT",
    "client_key_path": "MEDRAY_MILVUS_TLS_CLIENT_KEY",
    "server_name": "MEDRAY_MILVUS_TLS_SERVER_NAME",
}
LITE_VERSION_PREFIX = "milvus_lite"
IndexType = Literal["auto", "HNSW", "DISKANN"]
Backend = Literal["lite", "server"]


class RetrievalError(RuntimeError):
    """Milvus is unreachable, a collection is missing or mismatched, or a query is invalid."""


# pymilvus pings an idle channel every 10 s. A gRPC server with the default policy (Milvus
# Lite's) accepts one ping per 5 minutes without calls and answers more with GOAWAY
# "too_many_pings", which gRPC's C core prints to stderr (in the middle of the demo's stage
# lines). Ping half as often as that: a ping every exactly 5 minutes still drew the GOAWAY
# now and then (demo run 7, a loaded machine: timers fire a little early or late, and the
# server counts from its last ping or data). A dead server is still found by each call's
# timeout.
GRPC_OPTIONS = {"grpc.keepalive_time_ms": 600_000}


@dataclass(frozen=True)
class TLSSettings:
    """TLS to a Milvus server. An ``https://`` URI turns TLS on by itself (system CAs).

    Attributes:
        enabled: TLS on an ``http://`` / ``tcp://`` URI too.
        ca_pem_path: CA (or self-signed server) certificate to verify the server with
            (``$MEDRAY_MILVUS_TLS_CA``); empty: the system's CAs.
        client_pem_path / client_key_path: client certificate and key for mutual TLS
            (Milvus ``tlsMode: 2``; ``$MEDRAY_MILVUS_TLS_CLIENT_CERT`` / ``..._KEY``); both
            or neither, and mutual TLS also needs ``ca_pem_path``.
        server_name: name to check the server's certificate against when it differs from
            the URI's host (``$MEDRAY_MILVUS_TLS_SERVER_NAME``).
    """

    enabled: bool = False
    ca_pem_path: str = ""
    client_pem_path: str = ""
    client_key_path: str = ""
    server_name: str = ""

    def resolved(self) -> TLSSettings:
        """Empty fields filled from their environment variables; checked for consistency."""
        values = {
            name: getattr(self, name) or os.environ.get(env, "") for name, env in TLS_ENV.items()
        }
        tls = TLSSettings(enabled=self.enabled, **values)
        if bool(tls.client_pem_path) != bool(tls.client_key_path):
            raise ConfigError(
                "milvus.tls: mutual TLS needs both client_pem_path and client_key_path "
                f"(or {TLS_ENV['client_pem_path']} and {TLS_ENV['client_key_path']})"
            )
        if tls.client_pem_path and not tls.ca_pem_path:
            raise ConfigError(
                "milvus.tls: mutual TLS also needs ca_pem_path (the CA that signed the server's "
                f"certificate; or {TLS_ENV['ca_pem_path']})"
            )
        return tls

    def client_kwargs(self, uri: str) -> dict[str, Any]:
        """pymilvus TLS arguments (``secure``, ``server_pem_path`` or the mutual-TLS trio)."""
        tls = self.resolved()
        secure = tls.enabled or uri.lower().startswith("https://") or tls.ca_pem_path != ""
        if not secure:
            return {}
        for path in (tls.ca_pem_path, tls.client_pem_path, tls.client_key_path):
            if path and not Path(path).is_file():
                raise RetrievalError(f"Milvus TLS file {path} not found (milvus.tls)")
        out: dict[str, Any] = {"secure": True}
        if tls.client_pem_path:  # pymilvus: the trio means mutual TLS
            out |= {
                "client_pem_path": tls.client_pem_path,
                "client_key_path": tls.client_key_path,
                "ca_pem_path": tls.ca_pem_path,
            }
        elif tls.ca_pem_path:  # pymilvus: server_pem_path is the root it verifies with
            out["server_pem_path"] = tls.ca_pem_path
        if tls.server_name:
            out["server_name"] = tls.server_name
        return out


@dataclass(frozen=True)
class MilvusSettings:
    """Where Milvus is, how collections are indexed and searched.

    Attributes:
        uri: ``http(s)://host:port``; empty: ``$MEDRAY_MILVUS_URI``, else the default.
        token: ``user:password`` or an API key; empty: ``$MEDRAY_MILVUS_TOKEN`` (keep it in
            a secret, not in a config file).
        db_name: database; empty: ``$MEDRAY_MILVUS_DB``, else the server's default.
        tls: TLS settings (:class:`TLSSettings`).
        backend: ``auto`` (ask the server), ``lite`` or ``server``.
        index_type: ``auto`` (HNSW), ``HNSW`` or ``DISKANN`` (server only).
        hnsw_m / hnsw_ef_construction / ef: HNSW build and search parameters.
        diskann_search_list: DISKANN's candidate list per search (at least ``k``).
        timeout_s: connecting is retried with backoff until this runs out.
        index_timeout_s: the longest wait for a server's index build (``CaseStore.warm``).
    """

    uri: str = ""
    token: str = ""
    db_name: str = ""
    tls: TLSSettings = field(default_factory=TLSSettings)
    cases_collection: str = "cases"
    knowledge_collection: str = "knowledge"
    backend: Literal["auto", "lite", "server"] = "auto"
    index_type: IndexType = "auto"
    hnsw_m: int = 16
    hnsw_ef_construction: int = 200
    ef: int = 64
    diskann_search_list: int = 100
    timeout_s: float = 30.0
    index_timeout_s: float = 900.0

    def resolved_uri(self) -> str:
        """``uri``, else ``$MEDRAY_MILVUS_URI``, else :data:`DEFAULT_URI`."""
        return self.uri or os.environ.get(URI_ENV) or DEFAULT_URI

    def resolved_token(self) -> str:
        return self.token or os.environ.get(TOKEN_ENV, "")

    def resolved_db(self) -> str:
        return self.db_name or os.environ.get(DB_ENV, "")

    def display_uri(self) -> str:
        """The URI without credentials (safe for logs and summaries) plus the database."""
        parts = urlsplit(self.resolved_uri())
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        uri = urlunsplit((parts.scheme, netloc, parts.path, "", ""))
        db = self.resolved_db()
        return f"{uri} (database {db})" if db else uri

    def client_kwargs(self) -> dict[str, Any]:
        """Arguments of ``pymilvus.MilvusClient`` (uri, token, db_name, TLS, gRPC options)."""
        uri = self.resolved_uri()
        kwargs: dict[str, Any] = {
            "uri": uri,
            "token": self.resolved_token(),
            "grpc_options": dict(GRPC_OPTIONS),
        }
        if self.resolved_db():
            kwargs["db_name"] = self.resolved_db()
        return kwargs | self.tls.client_kwargs(uri)


def connect(settings: MilvusSettings, **extra: Any):
    """A ``MilvusClient`` that answered ``list_collections()``; RetrievalError otherwise.

    Connecting is retried with backoff for up to ``settings.timeout_s``: a busy Milvus
    Lite server (one Python process) can miss a short deadline under load. ``extra`` goes
    to ``MilvusClient`` (e.g. ``dedicated=True``).
    """
    from pymilvus import MilvusClient

    kwargs = settings.client_kwargs()
    deadline = time.monotonic() + settings.timeout_s
    delay, last = 0.5, None
    while True:
        remaining = deadline - time.monotonic()
        try:
            client = MilvusClient(**kwargs, timeout=max(1.0, min(10.0, remaining)), **extra)
            client.list_collections()
            return client
        except Exception as e:  # pymilvus raises MilvusException, gRPC errors, timeouts...
            last = e
        if time.monotonic() + delay >= deadline:
            break
        time.sleep(delay)
        delay = min(delay * 2, 5.0)
    raise RetrievalError(
        f"cannot reach Milvus at {settings.display_uri()} ({type(last).__name__}: {last}); "
        f"start the local cluster with `medray cluster up` or point {URI_ENV} / milvus.uri "
        "(and the token, database and TLS settings) at a running Milvus"
    ) from None


def backend_of(server_version: str) -> Backend:
    """``lite`` for Milvus Lite (its gRPC server reports ``milvus_lite-X.Y.Z``), else ``server``."""
    return "lite" if server_version.strip().lower().startswith(LITE_VERSION_PREFIX) else "server"


def detect_backend(settings: MilvusSettings, client) -> Backend:
    """``settings.backend`` unless ``auto``; then what the connected server says it is."""
    if settings.backend != "auto":
        return settings.backend
    return backend_of(str(client.get_server_version()))


@dataclass(frozen=True)
class VectorIndex:
    """A vector index to build (``build_params``) and how to search it."""

    index_type: str
    metric_type: str
    build_params: dict[str, Any]
    backend: Backend

    def search_params(self, k: int, settings: MilvusSettings) -> dict[str, Any]:
        """Per-search parameters for top ``k`` (never below ``k``, as Milvus requires)."""
        return search_params(self.index_type, k, settings)


def vector_index(settings: MilvusSettings, backend: Backend) -> VectorIndex:
    """The dense-vector index ``settings`` ask for on ``backend``.

    ``auto`` and ``HNSW`` build HNSW (M, efConstruction from settings) on Milvus Lite and on
    a server. ``DISKANN`` builds Milvus's on-disk Vamana graph (server only: Milvus Lite is
    FAISS in one process and has no disk index; Milvus needs the query and index nodes' data
    path on NVMe for it).

    Raises:
        RetrievalError: DISKANN asked of Milvus Lite.
    """
    kind = "HNSW" if settings.index_type == "auto" else settings.index_type
    if kind == "DISKANN":
        if backend == "lite":
            raise RetrievalError(
                "milvus.index_type DISKANN needs a Milvus server (standalone or distributed); "
                "Milvus Lite builds HNSW: set milvus.index_type=auto or point milvus.uri at a server"
            )
        return VectorIndex("DISKANN", "COSINE", {}, backend)
    return VectorIndex(
        "HNSW",
        "COSINE",
        {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction},
        backend,
    )


def search_params(index_type: str, k: int, settings: MilvusSettings) -> dict[str, Any]:
    """Search parameters for a collection whose vectors carry ``index_type``."""
    if index_type == "DISKANN":
        return {"search_list": max(settings.diskann_search_list, k)}
    return {"ef": max(settings.ef, k)}
