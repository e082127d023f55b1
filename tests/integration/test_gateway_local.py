"""The HTTP API over the plain classes in this process (no Ray): the single-process
baseline's app, Milvus being unreachable, key enforcement, streamed body limits."""

from __future__ import annotations

import base64
import io

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from medray import DISCLAIMER
from medray.config import from_dict
from medray.retrieval import MilvusSettings
from medray.serving.retriever import RetrievalUnavailable, Retriever
from medray.serving.sse import read_events
from serve_apps.settings import AppArgs

pytestmark = pytest.mark.integration

DEAD_MILVUS = "http://127.0.0.1:1"  # nothing listens on port 1
# The address (ASGI scope "server") and Host of a request that came in on loopback.
LOOPBACK = "http://127.0.0.1"


def _image() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), "gray").save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def backend(tiny_models):
    from medray.agent import AgentSettings
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.summariser import Summariser
    from serve_apps.backend import LocalBackend

    retriever = Retriever(MilvusSettings(uri=DEAD_MILVUS, timeout_s=2), "tiny-clip", "minilm-l6")
    agent = AgentSettings(max_cycles=0, max_queries=1, max_new_tokens=4)
    return LocalBackend(
        Guard(), Reasoner(), Summariser(), Embedder(), retriever, agent=agent, medqa=MedQA()
    )


def app_with(backend, **args):
    from serve_apps.gateway import create_app

    return create_app(backend, from_dict(AppArgs, args))


def events(resp) -> list[tuple[str, dict]]:
    return list(read_events(resp.iter_lines()))


def test_retriever_reports_milvus_down_instead_of_raising_something_else():
    r = Retriever(MilvusSettings(uri=DEAD_MILVUS, timeout_s=2))
    with pytest.raises(RetrievalUnavailable, match="cannot reach Milvus"):
        r.similar_cases([0.1] * 64)
    assert r.status()["milvus"] != "ok"


def test_milvus_down_degrades_analyze_and_search(backend):
    client = TestClient(app_with(backend, generation={"max_new_tokens": 4}), base_url=LOOPBACK)
    with client.stream(
        "POST", "/v1/analyze", json={"image": _image(), "question": "Is there an effusion?"}
    ) as r:
        assert r.status_code == 200
        ev = dict(events(r))
    assert (
        ev["similar_cases"]["hits"] == [] and "cannot reach Milvus" in ev["similar_cases"]["error"]
    )
    assert "cannot reach Milvus" in ev["knowledge"]["error"]
    # The agent (in this process, as in the baseline) still answers and says what is missing.
    answer = ev["agent_answer"]
    assert any("knowledge search failed" in m for m in answer["missing"]), answer["missing"]
    assert answer["citations"] == [] and answer["disclaimer"] == DISCLAIMER
    assert "error" not in ev
    assert ev["safety"]["disclaimer"] == DISCLAIMER and "done" in ev
    r = client.post("/v1/search", json={"text": "pleural effusion"})
    assert r.status_code == 200
    body = r.json()
    assert body["available"] is False and "cannot reach Milvus" in body["error"]
    ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["retriever"]["milvus"] != "ok"


def test_keys_are_required_beyond_loopback_and_missing_keys_fail_at_startup(backend, monkeypatch):
    monkeypatch.delenv("MEDRAY_API_KEYS", raising=False)
    with pytest.raises(ValueError, match="API keys are required"):
        app_with(backend, auth={"listen_host": "0.0.0.0"})
    monkeypatch.setenv("MEDRAY_API_KEYS", "s3cret")
    client = TestClient(app_with(backend, auth={"listen_host": "0.0.0.0"}))
    r = client.get("/v1/models")
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["error"]["message"]
    assert client.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert client.get("/health").status_code == 200  # probes stay open


def test_chunked_body_over_the_limit_is_a_413(backend):
    client = TestClient(app_with(backend, limits={"max_body_bytes": 1000}), base_url=LOOPBACK)
    r = client.post(
        "/generate",
        content=iter([b'{"question": "', b"x" * 600, b"x" * 600, b'"}']),
        headers={"content-type": "application/json"},
    )
    assert (
        r.status_code == 413 and "exceeds the limit of 1000 bytes" in r.json()["error"]["message"]
    )


def test_use_safety_false_still_carries_the_disclaimer(backend):
    client = TestClient(app_with(backend), base_url=LOOPBACK)
    body = client.post(
        "/generate",
        json={"question": "What is the capital of France?", "use_safety": False, "max_length": 3},
    ).json()
    assert not body["safety_report"]["refused"]
    assert body["safety_report"]["disclaimer"] == DISCLAIMER
    assert "disabled" in body["safety_report"]["warnings"][0]


def test_health_reports_models_loaded_before_any_ready_call(backend):
    """`model_loaded` reflects the model deployments themselves, not whether someone has
    called /ready yet (it said false right after a RUNNING deploy)."""
    assert TestClient(app_with(backend)).get("/health").json()["model_loaded"] is True

    class Unanswering(type(backend)):
        async def readiness(self):
            raise TimeoutError("reasoner replica not answering")

    silent = Unanswering(backend.guard, backend.reasoner, backend.summariser, backend.embedder)
    body = TestClient(app_with(silent)).get("/health").json()
    assert body["status"] == "healthy" and body["model_loaded"] is False


def test_audit_log_records_each_request_with_key_id_and_no_text(backend, monkeypatch, tmp_path):
    from medray.serving.audit import read_records
    from medray.serving.ratelimit import key_id

    canary = "CANARY-7c1d-audit"
    path = tmp_path / "audit.jsonl"
    monkeypatch.setenv("MEDRAY_API_KEYS", "s3cret-audit")
    app = app_with(
        backend,
        auth={"listen_host": "0.0.0.0"},
        audit={"path": str(path)},
        generation={"max_new_tokens": 4},
        agent={"enabled": False},
    )
    client = TestClient(app)
    auth = {"Authorization": "Bearer s3cret-audit"}
    question = f"Is there an effusion? {canary}"
    with client.stream(
        "POST", "/v1/analyze", json={"image": _image(), "question": question}, headers=auth
    ) as r:
        assert r.status_code == 200
        ev = dict(events(r))
    chat = {
        "model": "medray-reasoner",
        "max_tokens": 4,
        "messages": [{"role": "user", "content": f"Write a poem about football {canary}"}],
    }
    rc = client.post("/v1/chat/completions", json=chat, headers=auth)
    rs = client.post("/v1/search", json={"text": f"pleural effusion {canary}"}, headers=auth)
    r401 = client.post("/v1/search", json={"text": canary})
    assert (rc.status_code, rs.status_code, r401.status_code) == (200, 200, 401)

    recs = read_records(path)
    assert [(r["endpoint"], r["status"]) for r in recs] == [
        ("/v1/analyze", 200),
        ("/v1/chat/completions", 200),
        ("/v1/search", 200),
        ("/v1/search", 401),
    ]
    kid = key_id("s3cret-audit")
    assert [r["key_id"] for r in recs] == [kid, kid, kid, "anonymous"]
    assert recs[0]["request_id"] == ev["done"]["request_id"]
    assert recs[0]["model"] == recs[1]["model"] == "medray-reasoner"
    # The audit says what the client was told: the guard's decision and the risk level.
    for rec, report in (
        (recs[0], ev["safety"]),
        (recs[1], rc.json()["safety_report"]),
        (recs[2], rs.json()["safety_report"]),
    ):
        assert rec["guard"] == ("refused" if report["refused"] else "allowed")
        assert rec["risk_level"] == report["risk_level"]
        assert rec["latency_ms"] >= 0
    assert recs[3]["guard"] == "not_checked"
    text = path.read_text()
    assert canary not in text and "s3cret-audit" not in text


# ------------------------------------------------------------------ access: bound address, Host


def test_keys_follow_the_address_a_request_came_in_on(backend, monkeypatch):
    """Declared loopback-only (listen_host 127.0.0.1) but reached on another address (Serve
    bound to 0.0.0.0): that request needs a key; on loopback none is needed."""
    monkeypatch.setenv("MEDRAY_API_KEYS", "s3cret")
    app = app_with(backend)
    auth = {"Authorization": "Bearer s3cret"}
    assert TestClient(app, base_url=LOOPBACK).get("/v1/models").status_code == 200
    net = TestClient(app, base_url="http://192.0.2.7:8000")  # ASGI scope server: 192.0.2.7
    r = net.get("/v1/models")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert net.get("/v1/models", headers=auth).status_code == 200
    assert net.get("/health").status_code == 200  # probes stay open
    # No keys at all: a request from the network is refused, saying what to set.
    monkeypatch.delenv("MEDRAY_API_KEYS")
    app = app_with(backend)
    r = TestClient(app, base_url="http://192.0.2.7:8000").get("/v1/models", headers=auth)
    err = r.json()["error"]
    assert r.status_code == 403 and err["code"] == "api_keys_not_configured"
    assert "192.0.2.7" in err["message"] and "MEDRAY_API_KEYS" in err["message"]
    assert TestClient(app, base_url=LOOPBACK).get("/v1/models").status_code == 200


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1:8000", "LOCALHOST:18741", "[::1]:80"])
def test_loopback_without_keys_answers_loopback_host_names(backend, monkeypatch, host):
    monkeypatch.delenv("MEDRAY_API_KEYS", raising=False)
    client = TestClient(app_with(backend), base_url=LOOPBACK)
    assert client.get("/v1/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize(
    "host", ["evil.example", "127.0.0.1.nip.io:8000", "localhost.evil.example", "10.0.0.5"]
)
def test_loopback_without_keys_refuses_other_host_names_dns_rebinding(backend, host):
    client = TestClient(app_with(backend), base_url=LOOPBACK)
    r = client.post("/v1/search", json={"text": "effusion", "k": 1}, headers={"Host": host})
    assert r.status_code == 421 and r.headers["content-type"] == "application/json"
    err = r.json()["error"]
    assert err["code"] == "untrusted_host" and "DNS rebinding" in err["message"]
    assert client.get("/health", headers={"Host": host}).status_code == 200


def test_a_required_key_makes_the_host_irrelevant(backend, monkeypatch):
    monkeypatch.setenv("MEDRAY_API_KEYS", "s3cret")
    client = TestClient(app_with(backend, auth={"require": "always"}), base_url=LOOPBACK)
    r = client.get("/v1/models", headers={"Host": "medray.hospital.example"})
    assert r.status_code == 401
    r = client.get(
        "/v1/models",
        headers={"Host": "medray.hospital.example", "Authorization": "Bearer s3cret"},
    )
    assert r.status_code == 200
