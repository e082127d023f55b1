"""The audit log's record and sink (medray.serving.audit) and the middleware that writes
it (serve_apps.http.middleware.AuditMiddleware), on a small FastAPI app without models."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse
from fastapi.testclient import TestClient

from medray.config import ConfigError
from medray.safety import SafetyReport
from medray.safety.domain import DomainDecision
from medray.serving import audit
from serve_apps.http.middleware import AuditMiddleware, install_request_log

pytestmark = pytest.mark.unit

CANARY = "CANARY-audit-7f3e"


def test_record_has_the_fields_and_no_text():
    state = {"request_id": "r1"}
    audit.note_key(state, "key-abc")
    audit.note_model(state, "medray-reasoner")
    audit.note_guard(state, SafetyReport(risk_level=1, warnings=(CANARY,)))
    audit.note_guard(state, SafetyReport(risk_level=3))  # the answer's report raises the risk
    rec = audit.build_record(
        state,
        method="POST",
        endpoint="/v1/analyze",
        status=200,
        latency_ms=12.345,
        now=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    )
    d = json.loads(rec.to_json())
    assert d == {
        "time": "2026-01-02T03:04:05.000+00:00",
        "request_id": "r1",
        "key_id": "key-abc",
        "method": "POST",
        "endpoint": "/v1/analyze",
        "model": "medray-reasoner",
        "guard": "allowed",
        "guard_reason": "ok",
        "risk_level": 3,
        "status": 200,
        "latency_ms": 12.3,
    }
    assert CANARY not in rec.to_json()


def test_refusal_reason_codes_and_defaults():
    off = DomainDecision(medical=False, method="keywords", reason="not medical")
    state: dict = {}
    audit.note_guard(state, SafetyReport(refused=True, refusal="no", domain=off))
    audit.note_guard(state, SafetyReport())  # a later report never flips the decision
    rec = audit.build_record(state, method="POST", endpoint="/x", status=200, latency_ms=1)
    assert (rec.guard, rec.guard_reason, rec.key_id) == ("refused", "non_medical", "anonymous")
    inj = SafetyReport(refused=True, injection=("ignore previous",))
    assert audit.guard_reason(inj) == "injection"
    empty = audit.build_record({}, method="GET", endpoint="/health", status=200, latency_ms=0)
    assert (empty.guard, empty.guard_reason, empty.risk_level, empty.model) == (
        "not_checked",
        "none",
        None,
        None,
    )


def test_sink_appends_lines_to_a_private_file(tmp_path):
    path = tmp_path / "sub" / "audit.jsonl"
    log = audit.AuditLog(path)
    for i in range(3):
        log.write(
            audit.build_record(
                {"request_id": f"r{i}"}, method="GET", endpoint="/", status=200, latency_ms=i
            )
        )
    log.close()
    assert [r["request_id"] for r in audit.read_records(path)] == ["r0", "r1", "r2"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_settings_default_under_medray_home_and_absolute_paths_only(monkeypatch, tmp_path):
    monkeypatch.setenv("MEDRAY_HOME", str(tmp_path))
    assert audit.AuditSettings().file() == tmp_path / "logs" / "audit.jsonl"
    assert audit.AuditSettings(path="/var/log/a.jsonl").file().name == "a.jsonl"
    with pytest.raises(ConfigError, match="absolute"):
        audit.AuditSettings(path="relative/audit.jsonl")


def _app(sink: audit.AuditLog) -> FastAPI:
    app = FastAPI()

    @app.post("/ask")
    async def ask(request: Request):
        state = request.scope.setdefault("state", {})
        audit.note_key(state, "key-1")
        audit.note_guard(state, SafetyReport(risk_level=2))
        return {"ok": True}

    @app.post("/stream")
    async def stream(request: Request):
        state = request.scope.setdefault("state", {})

        async def body():
            yield "a"
            # noted while the stream runs: after the response headers went out
            audit.note_guard(state, SafetyReport(refused=True, injection=("x",)))
            yield "b"

        return StreamingResponse(body())

    @app.post("/boom")
    async def boom():
        raise RuntimeError("boom")

    install_request_log(app, _Metrics())
    app.add_middleware(AuditMiddleware, audit=sink)
    return app


class _Metrics:
    def observe(self, *a):
        pass

    def count(self, *a):
        pass


def test_middleware_writes_one_record_per_request_streams_and_errors_included(tmp_path):
    sink = audit.AuditLog(tmp_path / "audit.jsonl")
    client = TestClient(_app(sink), raise_server_exceptions=False)
    r = client.post("/ask", json={"q": CANARY}, headers={"x-request-id": "rid-1"})
    assert r.status_code == 200
    assert client.post("/stream", json={"q": CANARY}).text == "ab"
    assert client.post("/boom").status_code == 500
    assert client.get("/missing").status_code == 404
    recs = audit.read_records(sink.path)
    assert [(r["endpoint"], r["status"]) for r in recs] == [
        ("/ask", 200),
        ("/stream", 200),
        ("/boom", 500),
        ("/missing", 404),
    ]
    assert recs[0]["request_id"] == "rid-1" and recs[0]["key_id"] == "key-1"
    assert recs[0]["risk_level"] == 2 and recs[0]["guard"] == "allowed"
    assert (recs[1]["guard"], recs[1]["guard_reason"]) == ("refused", "injection")
    assert all(r["request_id"] not in ("", "-") for r in recs)
    assert CANARY not in sink.path.read_text()
