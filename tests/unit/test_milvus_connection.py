"""Milvus connection settings (URI, token, database, TLS from config or environment) and the
vector index each backend gets; no Milvus needed (a recording client stands in for the
server's answers to version and create calls)."""

from __future__ import annotations

import json

import pytest
from pymilvus import MilvusClient

from jobs.index import IndexConfig, index_line
from medray.config import ConfigError, load_config
from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings, RetrievalError
from medray.retrieval.connection import (
    DEFAULT_URI,
    GRPC_OPTIONS,
    TLS_ENV,
    TLSSettings,
    backend_of,
    search_params,
    vector_index,
)

pytestmark = pytest.mark.unit

ENV = ("MEDRAY_MILVUS_URI", "MEDRAY_MILVUS_TOKEN", "MEDRAY_MILVUS_DB", *TLS_ENV.values())


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path / "home"))


def write_local_cluster_state(uri: str) -> None:
    from medray.paths import cluster_dir

    cluster_dir().mkdir(parents=True)
    state = {"config": {}, "started_at": 0.0, "temp_dir": "/tmp/x", "ray_address": "a:1",
             "dashboard_url": "http://a:2", "milvus_uri": uri, "processes": []}  # fmt: skip
    (cluster_dir() / "state.json").write_text(json.dumps(state))


def test_uri_token_and_database_come_from_config_then_environment(monkeypatch):
    grpc = {"grpc_options": GRPC_OPTIONS}
    assert MilvusSettings().client_kwargs() == {"uri": DEFAULT_URI, "token": ""} | grpc
    monkeypatch.setenv("MEDRAY_MILVUS_URI", "http://milvus.milvus.svc:19530")
    monkeypatch.setenv("MEDRAY_MILVUS_TOKEN", "medray:s3cret")
    monkeypatch.setenv("MEDRAY_MILVUS_DB", "medray")
    assert (
        MilvusSettings().client_kwargs()
        == {
            "uri": "http://milvus.milvus.svc:19530",
            "token": "medray:s3cret",
            "db_name": "medray",
        }
        | grpc
    )
    s = MilvusSettings(uri="http://other:19530", token="root:Milvus", db_name="prod")
    assert s.client_kwargs() == {"uri": "http://other:19530", "token": "root:Milvus",
                                 "db_name": "prod"} | grpc  # fmt: skip


def test_clients_ping_no_more_often_than_a_default_grpc_server_allows():
    # gRPC servers' default policy: one keepalive ping per 5 min without calls; pymilvus's
    # 10 s made Milvus Lite answer GOAWAY "too_many_pings", printed on the demo's console.
    kw = MilvusSettings().client_kwargs()
    # At the limit itself (300 s) a loaded machine still drew it: keep a margin.
    assert kw["grpc_options"]["grpc.keepalive_time_ms"] >= 2 * 300_000


def test_the_store_no_longer_reads_the_local_cluster_state_but_the_cli_does():
    write_local_cluster_state("http://127.0.0.1:18999")
    assert MilvusSettings().resolved_uri() == DEFAULT_URI
    from medray.cli.cluster import local_milvus_uri

    assert local_milvus_uri() == "http://127.0.0.1:18999"
    assert local_milvus_uri("http://given:1") == "http://given:1"


def test_display_uri_hides_credentials(monkeypatch):
    s = MilvusSettings(uri="https://user:pw@in01.example.cloud:19538", db_name="d1")
    assert s.display_uri() == "https://in01.example.cloud:19538 (database d1)"
    assert "pw" not in s.display_uri()


def test_tls_one_way_mutual_and_https(tmp_path, monkeypatch):
    ca, cert, key = (tmp_path / n for n in ("ca.pem", "client.pem", "client.key"))
    for p in (ca, cert, key):
        p.write_text("x")
    # An https URI turns TLS on with the system CAs.
    https = MilvusSettings(uri="https://milvus.example:443").client_kwargs()
    assert https["secure"] is True and "server_pem_path" not in https
    # One-way TLS with a private CA, from the environment, and a server name override.
    monkeypatch.setenv("MEDRAY_MILVUS_TLS_CA", str(ca))
    monkeypatch.setenv("MEDRAY_MILVUS_TLS_SERVER_NAME", "milvus.internal")
    kw = MilvusSettings(uri="http://10.0.0.5:19530").client_kwargs()
    assert kw["secure"] is True
    assert kw["server_pem_path"] == str(ca) and kw["server_name"] == "milvus.internal"
    # Mutual TLS: the trio pymilvus expects.
    tls = TLSSettings(client_pem_path=str(cert), client_key_path=str(key))
    kw = MilvusSettings(uri="http://h:19530", tls=tls).client_kwargs()
    assert (kw["client_pem_path"], kw["client_key_path"], kw["ca_pem_path"]) == (
        str(cert),
        str(key),
        str(ca),
    )
    assert "server_pem_path" not in kw


def test_tls_mistakes_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="both client_pem_path and client_key_path"):
        MilvusSettings(tls=TLSSettings(client_pem_path="/c.pem")).client_kwargs()
    with pytest.raises(ConfigError, match="mutual TLS also needs ca_pem_path"):
        TLSSettings(client_pem_path="/c.pem", client_key_path="/c.key").resolved()
    missing = TLSSettings(ca_pem_path=str(tmp_path / "nope.pem"))
    with pytest.raises(RetrievalError, match="TLS file .*nope.pem not found"):
        MilvusSettings(tls=missing).client_kwargs()


def test_backend_from_the_server_version():
    assert backend_of("milvus_lite-3.2.2") == "lite"
    assert backend_of("v2.6.4") == "server"
    assert backend_of("2.5.16-zilliz") == "server"


def test_index_parameters_follow_the_backend():
    s = MilvusSettings(hnsw_m=24, hnsw_ef_construction=300, ef=80)
    for backend in ("lite", "server"):
        idx = vector_index(s, backend)
        assert (idx.index_type, idx.metric_type) == ("HNSW", "COSINE")
        assert idx.build_params == {"M": 24, "efConstruction": 300}
        assert idx.search_params(10, s) == {"ef": 80}
        assert idx.search_params(100, s) == {"ef": 100}  # never below k
    disk = MilvusSettings(index_type="DISKANN", diskann_search_list=64)
    idx = vector_index(disk, "server")
    assert (idx.index_type, idx.build_params) == ("DISKANN", {})
    assert idx.search_params(10, disk) == {"search_list": 64}
    assert search_params("DISKANN", 200, disk) == {"search_list": 200}
    with pytest.raises(RetrievalError, match="DISKANN needs a Milvus server"):
        vector_index(disk, "lite")


class RecordingClient:
    """Answers what a server answers to the calls ``create`` makes, and records them."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.created: dict[str, dict] = {}
        self.rows: dict[str, list] = {}

    def get_server_version(self) -> str:
        return self.version

    def has_collection(self, name: str) -> bool:
        return name in self.created

    def prepare_index_params(self):
        return MilvusClient.prepare_index_params()

    def create_collection(self, name, schema, index_params):
        self.created[name] = {i.field_name: i for i in index_params}

    def upsert(self, name, rows):
        self.rows.setdefault(name, []).extend(rows)

    def flush(self, name):
        pass


@pytest.mark.parametrize(
    ("version", "uri", "index_type", "expected"),
    [
        ("milvus_lite-3.2.2", "http://127.0.0.1:19530", "auto", "HNSW"),
        ("v2.6.4", "http://milvus-medray-milvus.milvus.svc:19530", "auto", "HNSW"),
        ("v2.6.4", "http://milvus-medray-milvus.milvus.svc:19530", "DISKANN", "DISKANN"),
    ],
)
def test_stores_create_the_backends_index_and_record_it(version, uri, index_type, expected):
    s = MilvusSettings(uri=uri, index_type=index_type)
    client = RecordingClient(version)
    CaseStore(s, client).create(16, {"clip_model": "m"})
    KnowledgeStore(s, client).create(16, {"text_model": "t"})
    for name, fields in (("cases", ["image_vec", "text_vec"]), ("knowledge", ["dense"])):
        for f in fields:
            assert client.created[name][f].index_type == expected
            assert client.created[name][f].get_index_configs()["metric_type"] == "COSINE"
        meta = [json.loads(r["info"]) for r in client.rows["medray_collections"]]
        assert {m["index_type"] for m in meta} == {expected}
    assert client.created["knowledge"]["sparse"].index_type == "SPARSE_INVERTED_INDEX"


def test_diskann_on_lite_is_refused_before_anything_is_created():
    client = RecordingClient("milvus_lite-3.2.2")
    with pytest.raises(RetrievalError, match="DISKANN needs a Milvus server"):
        CaseStore(MilvusSettings(index_type="DISKANN"), client).create(16, {})
    assert client.created == {}


def test_index_job_config_takes_every_connection_setting():
    cfg = load_config(
        IndexConfig,
        None,
        ["milvus.uri=https://milvus.example:443", "milvus.db_name=medray",
         "milvus.tls.ca_pem_path=/etc/milvus-tls/ca.pem", "milvus.index_type=DISKANN",
         "milvus.backend=server"],
    )  # fmt: skip
    assert cfg.milvus.tls.ca_pem_path == "/etc/milvus-tls/ca.pem"
    assert cfg.milvus.index_type == "DISKANN" and cfg.milvus.backend == "server"
    with pytest.raises(ConfigError, match="index_type"):
        load_config(IndexConfig, None, ["milvus.index_type=IVF_PQ"])


def test_index_summary_line_names_the_built_index():
    line = index_line(
        {"image_vec": {"index_type": "HNSW", "metric_type": "COSINE"},
         "text_vec": {"index_type": "HNSW", "metric_type": "COSINE"}}
    )  # fmt: skip
    assert line == "HNSW COSINE (image_vec, text_vec)"
