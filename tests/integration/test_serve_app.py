"""The MedRay Serve app on the shared local cluster, driven over real HTTP.

The app is deployed once for the test session (``served_app`` in conftest.py, which this
module, test_ui_browser.py and test_job_coexist.py share) from
``serve_apps/configs/local.yaml`` (the same path as ``medray serve up``: dashboard REST
API, this repo uploaded as working dir) with API keys required, three real LoRA adapters
made with peft, and small Milvus collections indexed with the same tiny CLIP and MiniLM the
app embeds queries with (served_app.py builds them). This module: health, docs, auth,
/generate, /v1/analyze (events, the agent, steps) and search; the OpenAI-compatible API,
bad input and operations are in test_serve_openai.py, test_serve_bad_input.py and
test_serve_ops.py (the fixtures they share are in conftest.py).
"""

from __future__ import annotations

import json
import time

import httpx
import pytest
from served_app import (
    BASE,
    IMAGE,
    JSON_ANSWER,
    JSON_QUESTION,
    sse_events,
)

from medray import DISCLAIMER
from medray.agent.answer_steps import NO_REVISION

pytestmark = pytest.mark.integration


# ------------------------------------------------------------------ health, docs, auth


def test_health_and_readiness_need_no_key(client):
    r = httpx.get(f"{BASE}/health", timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "healthy"
    r = httpx.get(f"{BASE}/ready", timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ready"] and body["reasoner"] and body["retriever"]["milvus"] == "ok"
    assert body["retriever"]["cases"] and body["retriever"]["knowledge"]


def test_openapi_schema_documents_every_endpoint(client):
    paths = client.get("/openapi.json").json()["paths"]
    for p in ("/v1/analyze", "/v1/search", "/v1/chat/completions", "/v1/models", "/generate",
              "/health", "/ready"):  # fmt: skip
        assert p in paths, p
    assert "text/event-stream" in json.dumps(paths["/v1/analyze"])
    assert "agent_answer" in json.dumps(paths["/v1/analyze"])


@pytest.mark.parametrize(
    "headers,message",
    [
        ({}, "missing API key"),
        ({"Authorization": "Bearer wrong"}, "invalid API key"),
        ({"Authorization": "Basic abc"}, "expected 'Bearer <key>'"),
    ],
)
def test_api_key_is_required(served, headers, message):
    r = httpx.post(
        f"{BASE}/generate", json={"question": "Is there an effusion?"}, headers=headers, timeout=30
    )
    assert r.status_code == 401
    err = r.json()["error"]
    assert message in err["message"] and err["type"] == "authentication_error"


# ------------------------------------------------------------------ /generate


def test_generate_contract(client):
    r = client.post(
        "/generate",
        json={
            "question": "What are the symptoms of diabetes?",
            "temperature": 0.7,
            "max_length": 12,
            "use_safety": True,
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"response", "model", "safety_report", "inference_time_ms"}
    assert isinstance(body["response"], str) and body["inference_time_ms"] > 0
    # The text medical-QA model answered (the MedQA deployment), and says which weights.
    assert body["model"]["model"] == "medray-medqa" and body["model"]["kind"] == "preset"
    rep = body["safety_report"]
    assert rep["risk_level"] == 0 and rep["warnings"] == [] and rep["disclaimer"] == DISCLAIMER


def test_generate_refuses_a_non_medical_question_with_a_clear_message(client):
    r = client.post("/generate", json={"question": "What is the capital of France?"})
    assert r.status_code == 200
    body = r.json()
    assert body["response"].startswith("MedRay only answers medical and radiology questions")
    assert "capital of" in body["response"]
    assert body["safety_report"]["refused"] and body["safety_report"]["disclaimer"] == DISCLAIMER


def test_generate_flags_an_emergency(client):
    body = client.post(
        "/generate",
        json={"question": "I have crushing chest pain, what should I do?", "max_length": 4},
    ).json()
    assert body["safety_report"]["risk_level"] == 3
    assert "emergency number" in body["safety_report"]["notices"][0]


# ------------------------------------------------------------------ /v1/analyze


def test_analyze_streams_events_as_they_happen(client):
    t0 = time.perf_counter()
    with client.stream(
        "POST",
        "/v1/analyze",
        json={
            "image": IMAGE,
            "question": "Is there a pleural effusion?",
            "k": 3,
            "max_new_tokens": 48,
            "agent": False,
        },
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        events = list(sse_events(resp))
    t_end = time.perf_counter()
    kinds = [e for _, e, _ in events]
    assert kinds[0] == "guard" and kinds[-2:] == ["safety", "done"]
    order = [k for k in kinds if k not in ("token", "step")]
    assert order == [
        "guard",
        "reasoning",
        "summary",
        "similar_cases",
        "knowledge",
        "safety",
        "done",
    ]
    assert kinds.count("token") >= 5
    data = {e: d for _, e, d in events}
    assert data["guard"]["allowed"] is True
    assert set(data["reasoning"]) >= {"text", "parsed", "ok", "repaired", "errors"}
    # The untrained tiny VLM writes no JSON: the parser says so instead of failing.
    assert data["reasoning"]["ok"] is False and data["reasoning"]["errors"]
    assert [h["id"].startswith("case-") for h in data["similar_cases"]["hits"]] == [True] * 3
    assert len(data["knowledge"]["hits"]) == 3 and "title" in data["knowledge"]["hits"][0]
    assert data["safety"]["disclaimer"] == DISCLAIMER
    assert data["done"]["inference_time_ms"] > 0
    # Events arrive while the request is still running, not all at the end.
    first, first_token = events[0][0], next(t for t, e, _ in events if e == "token")
    total = t_end - t0
    assert first - t0 < 0.5 * total, (first - t0, total)
    assert t_end - first_token > 0.1, "tokens must stream before the summary and retrieval"


# The tiny reasoner's output does not parse, so there is no candidate diagnosis and the
# agent does not revise (medray.agent.answer_steps.NO_REVISION; the revision cycles are
# covered with a candidate in tests/unit/test_agent.py).
AGENT_EVENTS = [
    "agent_diagnoses",
    "agent_queries",
    "agent_sources",
    "agent_draft",
    "agent_reflection",
    "agent_answer",
]


def test_analyze_streams_the_agents_events_end_to_end(client):
    """The Agent deployment over the tiny reasoner (no stand-in): every agent event
    arrives after retrieval and before safety/done, the reflection says why it does not
    revise, and the final answer cites only what was retrieved."""
    body = {"image": IMAGE, "question": "Is there a pleural effusion?", "max_new_tokens": 8}
    with client.stream("POST", "/v1/analyze", json=body) as resp:
        assert resp.status_code == 200
        events = list(sse_events(resp))
    kinds = [e for _, e, _ in events if e not in ("token", "step")]
    assert "error" not in kinds, [d for _, e, d in events if e == "error"]
    assert kinds == [
        "guard",
        "reasoning",
        "summary",
        "similar_cases",
        "knowledge",
        *AGENT_EVENTS,
        "safety",
        "done",
    ]
    data = [(e, d) for _, e, d in events]
    retrieved = {s["label"]: s["id"] for e, d in data if e == "agent_sources" for s in d["sources"]}
    assert any(lab.startswith("K") for lab in retrieved), retrieved
    answer = data[-3][1]
    for key in ("findings", "most_likely_diagnosis", "differential", "severity", "next_steps",
                "citations", "confidence", "safety_report", "disclaimer", "trace"):  # fmt: skip
        assert key in answer, key
    assert answer["disclaimer"] == DISCLAIMER and answer["cycles"] == 0
    reflection = next(d for e, d in data if e == "agent_reflection")
    assert reflection["revise"] is False and reflection["reason"] == NO_REVISION
    assert answer["status"] == "insufficient_evidence" and answer["confidence"] == 0.0
    assert all(retrieved[c["label"]] == c["id"] for c in answer["citations"])
    assert answer["web_search"]["enabled"] is False and answer["web_search"]["note"]
    steps = [t["step"] for t in answer["trace"]]
    assert steps.count("reflect") == 1 and steps[-1] == "finalize"
    # The tiny model's text is unreadable: the trace says which fallback each step took.
    assert any(t.get("fallback") for t in answer["trace"])
    assert "timings_ms" in data[-1][1] and "agent" in data[-1][1]["timings_ms"]


def test_analyze_streams_each_reasoning_step_as_it_closes(client):
    """With an adapter that writes the structured answer, the caption, every reasoning
    step and the answer arrive as step events before the stream's parsed result."""
    body = {
        "image": IMAGE,
        "question": JSON_QUESTION,
        "model": "lora-json",
        "max_new_tokens": 120,
        "agent": False,
    }
    with client.stream("POST", "/v1/analyze", json=body) as resp:
        assert resp.status_code == 200
        events = list(sse_events(resp))
    kinds = [e for _, e, _ in events]
    steps = [d for _, e, d in events if e == "step"]
    assert [(s["kind"], s["text"]) for s in steps] == [
        ("caption", JSON_ANSWER["caption"]),
        ("step", JSON_ANSWER["reasoning"][0]),
        ("step", JSON_ANSWER["reasoning"][1]),
        ("answer", JSON_ANSWER["answer"]),
    ]
    assert [s.get("index") for s in steps[1:3]] == [0, 1]
    # Each step comes while tokens are still streaming, before the parsed result.
    first_step = kinds.index("step")
    assert "token" in kinds[first_step + 1 :] and kinds.index("reasoning") > first_step
    t_step = next(t for t, e, _ in events if e == "step")
    t_reasoning = next(t for t, e, _ in events if e == "reasoning")
    assert t_step < t_reasoning
    reasoning = next(d for _, e, d in events if e == "reasoning")
    assert reasoning["ok"] is True and reasoning["errors"] == []
    assert reasoning["parsed"] == JSON_ANSWER


def test_analyze_refuses_a_non_medical_question(client):
    with client.stream(
        "POST", "/v1/analyze", json={"image": IMAGE, "question": "Who won the football world cup?"}
    ) as resp:
        assert resp.status_code == 200
        events = list(sse_events(resp))
    kinds = [e for _, e, _ in events]
    assert kinds == ["guard", "safety", "done"]
    guard = events[0][2]
    assert guard["allowed"] is False and "only answers medical" in guard["message"]
    assert events[1][2]["refused"] is True


# ------------------------------------------------------------------ /v1/search


def test_search_text_to_image_and_image_to_text(client):
    r = client.post("/v1/search", json={"text": "pleural effusion", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["mode"] == "text_to_image" and body["available"] is True
    assert len(body["hits"]) == 4 and all(h["id"].startswith("case-") for h in body["hits"])
    assert body["safety_report"]["disclaimer"] == DISCLAIMER
    r = client.post(
        "/v1/search", json={"image": IMAGE, "k": 2, "filters": {"labels": ["cardiomegaly"]}}
    )
    body = r.json()
    assert body["mode"] == "image_to_text" and len(body["hits"]) == 2
    assert all("cardiomegaly" in h["labels"] for h in body["hits"])
