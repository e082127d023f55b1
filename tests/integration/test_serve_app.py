"""The MedRay Serve app on the shared local cluster, driven over real HTTP.

The app is deployed once for the test session (``served_app`` in conftest.py, which this
module, test_ui_browser.py and test_job_coexist.py share) from
``serve_apps/configs/local.yaml`` (the same path as ``medray serve up``: dashboard REST
API, this repo uploaded as working dir) with API keys required, three real LoRA adapters
made with peft, and small Milvus collections indexed with the same tiny CLIP and MiniLM the
app embeds queries with (served_app.py builds them).
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from served_app import (
    ADAPTERS,
    AUTH,
    BASE,
    IMAGE,
    JSON_ANSWER,
    JSON_QUESTION,
    KEY,
    SERVE_PORT,
    b64,
    in_subprocess,
    png,
    xray,
)

from medray import DISCLAIMER
from medray.agent.answer_steps import NO_REVISION
from medray.serving.sse import read_events

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def served(served_app) -> str:
    """The dashboard URL of the session's test app (``served_app`` in conftest.py)."""
    return served_app.dashboard


@pytest.fixture(scope="module")
def client(served):
    with httpx.Client(base_url=BASE, headers=AUTH, timeout=120) as c:
        yield c


def sse_events(resp: httpx.Response):
    """(arrival time, event, data) for each SSE event of a streamed response."""
    for event, data in read_events(resp.iter_lines()):
        yield time.perf_counter(), event, data


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


# ------------------------------------------------------------------ OpenAI compatibility


@pytest.fixture(scope="module")
def oai(served):
    from openai import OpenAI

    return OpenAI(base_url=f"{BASE}/v1", api_key=KEY, timeout=120, max_retries=0)


def test_openai_client_lists_models(oai):
    ids = [m.id for m in oai.models.list().data]
    # The reasoner and its adapters (chat, analyze), then the text QA model (/generate).
    assert ids == ["medray-reasoner", *ADAPTERS, "lora-json", "medray-medqa"]


def test_openai_client_plain_completion(oai):
    resp = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[
            {"role": "user", "content": "What does a pleural effusion look like on a chest X-ray?"}
        ],
        max_tokens=8,
    )
    assert resp.object == "chat.completion" and resp.choices[0].message.role == "assistant"
    assert resp.choices[0].finish_reason in ("stop", "length")
    assert resp.usage.completion_tokens <= 8
    assert resp.model_extra["safety_report"]["disclaimer"] == DISCLAIMER


def test_openai_client_streaming_with_an_image(oai):
    stream = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Is the heart enlarged?"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            }
        ],
        max_tokens=16,
        stream=True,
    )
    chunks = list(stream)
    assert len(chunks) >= 3
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")
    assert chunks[-1].model_extra["safety_report"]["disclaimer"] == DISCLAIMER
    plain = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Is the heart enlarged?"},
                    {"type": "image_url", "image_url": {"url": IMAGE}},
                ],
            }
        ],
        max_tokens=16,
    )
    assert plain.choices[0].message.content == text  # greedy: same answer either way
    assert plain.usage.prompt_tokens > 16  # the image's visual tokens are in the prompt


def test_openai_client_guard_refusal(oai):
    resp = oai.chat.completions.create(
        model="medray-reasoner",
        messages=[{"role": "user", "content": "Write a poem about the sea."}],
    )
    assert resp.choices[0].finish_reason == "content_filter"
    assert "only answers medical" in resp.choices[0].message.content


def test_openai_client_unknown_model_is_a_404(oai):
    import openai

    with pytest.raises(openai.NotFoundError, match="does not exist"):
        oai.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "Is there an effusion?"}]
        )


# ------------------------------------------------------------------ LoRA multiplexing


def test_adapters_load_on_demand_and_are_evicted_lru(client, oai):
    def answer(model: str) -> str:
        return (
            oai.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": "Is there an effusion?"}],
                max_tokens=8,
            )
            .choices[0]
            .message.content
        )

    base = answer("medray-reasoner")
    outs = {name: answer(name) for name in ADAPTERS[:2]}
    assert client.get("/v1/adapters").json()["loaded"] == sorted(ADAPTERS[:2])
    outs[ADAPTERS[2]] = answer(ADAPTERS[2])
    info = client.get("/v1/adapters").json()
    # Capacity 2: loading the third evicted the least recently used (the first).
    assert info["loaded"] == sorted(ADAPTERS[1:]) and info["max_loaded_per_replica"] == 2
    assert len({base, *outs.values()}) == 4, "each adapter changes the model's output"
    assert answer(ADAPTERS[0]) == outs[ADAPTERS[0]]  # reloaded on demand, same weights
    assert answer("medray-reasoner") == base  # the base model is untouched by adapters


# ------------------------------------------------------------------ bad input


def _truncated_png() -> str:
    data = png(
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (112, 112, 3), dtype=np.uint8))
    )
    return b64(data[: len(data) // 2])


def _huge_png() -> str:
    return b64(png(Image.new("1", (10_000, 10_000))))


BAD = [
    # (name, method, path, json or raw body, headers, status, phrase)
    ("not an image", "/v1/analyze", {"image": b64(b"hello, I am text")}, 422, "not an image"),
    ("truncated image", "/v1/analyze", {"image": _truncated_png()}, 422, "truncated"),
    ("10000x10000 image", "/v1/analyze", {"image": _huge_png()}, 413, "10000x10000"),
    ("not base64", "/v1/analyze", {"image": "%%%"}, 422, "not valid base64"),
    ("remote url", "/v1/analyze", {"image": "https://example.com/x.png"}, 422, "not fetched"),
    (
        "missing image",
        "/v1/analyze",
        {"question": "Is there an effusion?"},
        422,
        "image is required",
    ),
    ("missing question", "/generate", {"temperature": 0.5}, 422, "question is required"),
    (
        "wrong type question",
        "/generate",
        {"question": 42},
        422,
        "question should be a valid string",
    ),
    (
        "wrong type temperature",
        "/generate",
        {"question": "Is there an effusion?", "temperature": "hot"},
        422,
        "temperature",
    ),
    (
        "temperature out of range",
        "/generate",
        {"question": "Is there an effusion?", "temperature": 9},
        422,
        "less than or equal to 2",
    ),
    (
        "unknown field",
        "/generate",
        {"question": "Is there an effusion?", "temprature": 1},
        422,
        "temprature is not a known field",
    ),
    ("empty question", "/generate", {"question": "   "}, 422, "question is empty"),
    (
        "max_length over limit",
        "/generate",
        {"question": "Is there an effusion?", "max_length": 100000},
        422,
        "over the limit",
    ),
    (
        "too long question",
        "/generate",
        {"question": "effusion " * 1000},
        422,
        "over the limit of 4000",
    ),
    ("invalid json", "/generate", b"{not json", 422, "not valid JSON"),
    ("json array body", "/generate", [1, 2], 422, "must be a JSON object"),
    ("unknown model", "/v1/analyze", {"image": IMAGE, "model": "nope"}, 404, "does not exist"),
    (
        "unknown adapter (chat)",
        "/v1/chat/completions",
        {"model": "lora-z", "messages": [{"role": "user", "content": "Is there an effusion?"}]},
        404,
        "lora-z",
    ),
    (
        "chat without messages",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": []},
        422,
        "messages",
    ),
    (
        "chat bad role",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": [{"role": "wizard", "content": "x"}]},
        422,
        "role",
    ),
    (
        "chat bad image part",
        "/v1/chat/completions",
        {
            "model": "medray-reasoner",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                    ],
                }
            ],
        },
        422,
        "not an image",
    ),
    (
        "chat empty user message",
        "/v1/chat/completions",
        {"model": "medray-reasoner", "messages": [{"role": "user", "content": ""}]},
        422,
        "empty",
    ),
    (
        "search both text and image",
        "/v1/search",
        {"text": "effusion", "image": IMAGE},
        422,
        "exactly one",
    ),
    ("search neither", "/v1/search", {"k": 3}, 422, "exactly one"),
    (
        "search bad filter",
        "/v1/search",
        {"text": "effusion", "filters": {"colour": "red"}},
        422,
        "cannot filter on 'colour'",
    ),
    (
        "search k zero",
        "/v1/search",
        {"text": "effusion", "k": 0},
        422,
        "k should be greater than or equal to 1",
    ),
    ("unknown path", "/v1/nothing", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("name,path,body,status,phrase", BAD, ids=[b[0] for b in BAD])
def test_bad_input_gets_a_4xx_json_error_naming_the_problem(
    client, name, path, body, status, phrase
):
    if isinstance(body, bytes):
        r = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        r = client.post(path, json=body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert phrase in err["message"], err


def test_oversize_body_is_refused_with_413(client):
    big = "A" * (9 * 1024 * 1024)
    r = client.post("/v1/analyze", json={"image": big})
    assert r.status_code == 413
    assert "exceeds the limit" in r.json()["error"]["message"]
    # Without a Content-Length (chunked upload) the limit holds too.
    r = client.post(
        "/v1/analyze",
        content=iter([b'{"image": "'] + [b"A" * (1024 * 1024)] * 9 + [b'"}']),
        headers={"content-type": "application/json"},
    )
    assert r.status_code == 413, r.text


def test_the_app_survives_bad_input(client):
    """After the whole bad-input table the app still answers."""
    assert (
        client.post(
            "/generate", json={"question": "Is there an effusion?", "max_length": 2}
        ).status_code
        == 200
    )


# ------------------------------------------------------------------ metrics


def test_prometheus_metrics_through_ray(client, ray_cluster):
    import ray

    ports = [n["MetricsExportPort"] for n in ray.nodes() if n["Alive"]]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        client.get("/v1/models")
        text = ""
        for port in ports:
            with contextlib.suppress(httpx.HTTPError):
                text += httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
        if 'endpoint="/v1/models"' in text and "medray_http_request_latency_ms" in text:
            break
        time.sleep(3)
    lines = [ln for ln in text.splitlines() if "medray_http" in ln and not ln.startswith("#")]
    assert any('endpoint="/v1/models"' in ln and 'status="200"' in ln for ln in lines), lines[:5]


# ------------------------------------------------------------------ demo


def test_demo_sends_an_analyze_request_and_prints_live_urls(client, capsys):
    """What ``medray demo`` does once the app runs (``serve_demo``: ``analyze_once`` and
    ``print_urls``; the deploy/remove around them is the fixture's): every printed URL
    answers on this app."""
    from medray.cli.serve import analyze_once, print_urls
    from medray.serving.deploy import load_serve_config

    kinds = analyze_once(BASE, "Is there a pleural effusion?", AUTH)
    assert kinds[0] == "guard" and kinds[-1] == "done" and "error" not in kinds
    assert {"reasoning", "summary", "similar_cases", "knowledge", "safety"} <= set(kinds)
    print_urls(load_serve_config("serve_apps/configs/local.yaml", [], port=SERVE_PORT))
    urls = [ln.split()[-1] for ln in capsys.readouterr().out.splitlines() if "http://" in ln]
    assert f"{BASE}/v1/analyze" in urls and f"{BASE}/ui/" in urls and len(urls) == 9
    for url in urls:
        path = url.removeprefix(BASE)
        gets = ("/health", "/ready", "/v1/models", "/docs", "/ui/")
        r = client.get(path) if path in gets else None
        if r is None:
            r = client.post(path, json={})  # POST endpoints: reachable, input checked
            assert r.status_code == 422, (url, r.status_code)
        else:
            assert r.status_code == 200, (url, r.status_code)


def test_web_ui_analyzes_through_the_served_api(client, tmp_path):
    """The Gradio UI mounted on the Serve gateway (``/ui``), driven with Gradio's own
    client through Serve's proxy: its queue streams, and its analyze call reaches this
    app's ``/v1/analyze`` with the key typed into the page (a wrong key: the API's 401).
    The browser test (test_ui_browser.py) covers the page itself."""
    from gradio_client import Client, handle_file

    page = client.get("/ui/")
    assert page.status_code == 200 and "gradio" in page.text.lower()
    image = tmp_path / "chest.png"
    image.write_bytes(png(xray(3)))
    ui = Client(f"{BASE}/ui/", verbose=False)
    args = (handle_file(str(image)), "Is there a pleural effusion?", "(the app's default)")
    # Inputs: image, question, model, key, sample (none), reasoning length (None: default).
    status, _, _, _, answer, cases, safety, cites = ui.predict(
        *args, KEY, None, None, api_name="/analyze"
    )
    assert status == "**Done.**", status
    assert answer and "case-" in cases and DISCLAIMER in safety, (answer, cases, safety)
    assert "medray-cite" in cites or "No citations" in cites, cites
    status = ui.predict(*args, "wrong", None, None, api_name="/analyze")[0]
    assert status.startswith("**Error (401):**") and "invalid API key" in status


# ------------------------------------------------------------------ degraded retrieval


def test_zz_missing_collection_degrades_to_a_clear_event_and_recovers(client, milvus_uri):
    """Runs last in this module: drops the knowledge collection under the running app,
    then builds it again; the app finds it again without a restart (the UI tests after
    this module cite from it)."""
    body = {"image": IMAGE, "max_new_tokens": 4, "agent": False}

    def analyze() -> dict:
        with client.stream("POST", "/v1/analyze", json=body) as resp:
            assert resp.status_code == 200
            return {e: d for _, e, d in sse_events(resp)}

    in_subprocess(f"drop_knowledge({milvus_uri!r})")
    try:
        data = analyze()
        assert data["knowledge"]["hits"] == [] and "does not exist" in data["knowledge"]["error"]
        assert len(data["similar_cases"]["hits"]) == 3  # the rest still works
        assert "done" in data
    finally:
        in_subprocess(f"index_knowledge({milvus_uri!r})")
    data = analyze()
    assert data["knowledge"]["hits"] and not data["knowledge"].get("error"), data["knowledge"]


# ------------------------------------------------------------------ medray analyze (CLI)


def test_cli_analyze_streams_readable_lines(client, tmp_path):
    """``medray analyze FILE "question"`` against this app: the image goes from a file,
    each step is a line, ``--json`` prints the raw events, an unknown model is the API's
    own 404 message."""
    from click.testing import CliRunner

    from medray.cli.main import cli

    image = tmp_path / "chest.png"
    image.write_bytes(base64.b64decode(IMAGE.split(",", 1)[1]))
    common = ["--url", BASE, "--api-key", KEY]
    args = ["analyze", str(image), JSON_QUESTION, "--model", "lora-json", "--max-new-tokens", "120"]
    res = CliRunner().invoke(cli, [*args, *common, "--no-agent"])
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert lines[0] == "guard: allowed"
    assert lines[1:5] == [
        f"caption: {JSON_ANSWER['caption']}",
        f"step 1: {JSON_ANSWER['reasoning'][0]}",
        f"step 2: {JSON_ANSWER['reasoning'][1]}",
        f"answer: {JSON_ANSWER['answer']}",
    ]
    assert lines[5].startswith("reasoning: parsed (model lora-json")
    assert f"  box: {JSON_ANSWER['boxes'][0]}" in lines
    assert any(ln.startswith("summary: ") for ln in lines)
    assert "similar cases: 3" in lines and f"disclaimer: {DISCLAIMER}" in lines
    assert lines[-1].startswith("done in ")
    res = CliRunner().invoke(cli, ["analyze", str(image), "Is the heart enlarged?", "--json",
                                   "--max-new-tokens", "8", *common])  # fmt: skip
    assert res.exit_code == 0, res.output
    kinds = [json.loads(ln)["event"] for ln in res.output.splitlines()]
    assert kinds[0] == "guard" and kinds[-1] == "done" and "agent_answer" in kinds
    res = CliRunner().invoke(cli, ["analyze", str(image), "Q?", "--model", "nope", *common])
    assert res.exit_code == 1 and "the app answered 404" in res.output and "nope" in res.output


# ------------------------------------------------------------------ audit, canary


def _files_holding(roots: list[Path], needle: bytes) -> tuple[int, list[str]]:
    """How many files lie under ``roots``, and those whose bytes contain ``needle``."""
    seen, found = 0, []
    for root in roots:
        for path in root.rglob("*"):
            if not path.is_file() or path.is_symlink():
                continue
            seen += 1
            with contextlib.suppress(OSError), path.open("rb") as f:
                if needle in f.read():
                    found.append(str(path))
    return seen, found


def test_canary_in_questions_reaches_no_log_or_file_of_the_cluster(served, client, ray_cluster):
    """A unique string sent in an image question, a chat message and a search query is in
    no file the cluster wrote (Ray's session logs of every node, MEDRAY_HOME: cluster
    logs, Milvus data, the audit log); the audit log holds the three requests."""
    import uuid

    from medray.paths import medray_home
    from medray.serving.audit import read_records
    from medray.serving.ratelimit import key_id

    canary = f"CANARY{uuid.uuid4().hex}"  # made here: not in the uploaded sources
    question = f"Is there a pleural effusion? Patient {canary}"
    with client.stream(
        "POST",
        "/v1/analyze",
        json={"image": IMAGE, "question": question, "max_new_tokens": 8},
    ) as r:
        assert r.status_code == 200, r.read()
        done = dict((e, d) for _, e, d in sse_events(r))["done"]
    chat = client.post(
        "/v1/chat/completions",
        json={
            "model": "medray-reasoner",
            "max_tokens": 8,
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": f"Describe this chest film of {canary}"},
                        {"type": "image_url", "image_url": {"url": IMAGE}},
                    ],
                }
            ],
        },
    )
    search = client.post("/v1/search", json={"text": f"pleural effusion {canary}", "k": 2})
    assert chat.status_code == 200 and search.status_code == 200
    # Serve's proxy sends x-request-id again beside the app's (httpx joins them: "id, id").
    rids = {done["request_id"]} | {
        r.headers["x-request-id"].split(",")[0].strip() for r in (chat, search)
    }
    assert len(rids) == 3, rids

    audit_file = medray_home() / "logs" / "audit.jsonl"
    records = {r["request_id"]: r for r in read_records(audit_file)}
    assert rids <= set(records), "the audit log misses a request"
    assert {records[i]["key_id"] for i in rids} == {key_id(KEY)}
    assert {records[i]["endpoint"] for i in rids} == {
        "/v1/analyze",
        "/v1/chat/completions",
        "/v1/search",
    }
    roots = [Path(ray_cluster.temp_dir), medray_home()]
    seen, found = _files_holding(roots, canary.encode())
    # The scan reads the Serve replicas' logs: the request log line of the analyze is there.
    _, with_rid = _files_holding([Path(ray_cluster.temp_dir)], done["request_id"].encode())
    assert any("serve" in p for p in with_rid), with_rid
    assert not found, f"the canary is in {found} ({seen} files read)"
    # The key itself is in nothing the dashboard shows (the app's config names its file).
    from medray.serving.deploy import app_details

    shown = json.dumps(app_details(served, "medray"))
    assert "api_keys_file" in shown and KEY not in shown
