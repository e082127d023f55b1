"""Overload on the HTTP API over the plain classes in this process (no Ray): the per-client
rate limit, the total prompt cap, per-endpoint time limits, a full deployment queue, and a
client that leaves mid-stream stopping its generation."""

from __future__ import annotations

import asyncio
import json
import threading

import pytest
from fastapi.testclient import TestClient

from medray.config import from_dict
from medray.safety import SafetyReport
from medray.serving.sse import read_events
from serve_apps.settings import AppArgs

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def parts(tiny_models):
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.summariser import Summariser

    return Guard(), Reasoner(), Summariser(), Embedder(), MedQA()


def backend_of(parts, cls=None, reasoner=None):
    from serve_apps.backend import LocalBackend

    guard, real_reasoner, summariser, embedder, medqa = parts
    return (cls or LocalBackend)(
        guard, reasoner or real_reasoner, summariser, embedder, None, medqa=medqa
    )


def client_of(backend, **args) -> TestClient:
    from serve_apps.gateway import create_app

    return TestClient(create_app(backend, from_dict(AppArgs, args)), base_url="http://127.0.0.1")


def chat(text: str, **extra) -> dict:
    return {
        "model": "medray-reasoner",
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 2,
        **extra,
    }


def test_rate_limit_is_per_key_and_answers_429_with_retry_after(parts, monkeypatch):
    monkeypatch.setenv("MEDRAY_API_KEYS", "key-one,key-two")
    client = client_of(
        backend_of(parts),
        auth={"require": "always"},
        rate_limit={"per_second": 0.01, "burst": 2, "analyze_cost": 1},
    )
    one = {"Authorization": "Bearer key-one"}
    assert [client.get("/v1/models", headers=one).status_code for _ in range(2)] == [200, 200]
    r = client.get("/v1/models", headers=one)
    assert r.status_code == 429
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()["error"]
    assert err["code"] == "rate_limit_exceeded" and "rate_limit" in err["message"]
    assert "key-one" not in r.text  # the key is never echoed
    # Another key has its own bucket; probes are not limited; a bad key is a 401, not a 429.
    assert client.get("/v1/models", headers={"Authorization": "Bearer key-two"}).status_code == 200
    assert all(client.get("/health").status_code == 200 for _ in range(4))
    assert client.get("/v1/models", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_analyze_costs_more_of_the_bucket_and_no_keys_means_per_address(parts):
    client = client_of(
        backend_of(parts), rate_limit={"per_second": 0.01, "burst": 4, "analyze_cost": 4}
    )
    first = client.post("/v1/analyze", json={"image": "bm90IGFuIGltYWdl"})  # 4xx, still costs
    assert first.status_code != 429
    r = client.post("/v1/search", json={"text": "effusion"})
    assert r.status_code == 429
    assert 90 <= int(r.headers["retry-after"]) <= 100  # 1 token at 0.01 tokens/s
    assert (
        client_of(backend_of(parts), rate_limit={"enabled": False}).get("/v1/models").status_code
        == 200
    )


def test_total_prompt_size_is_capped_naming_the_limit(parts):
    client = client_of(backend_of(parts), limits={"max_prompt_chars": 50})
    body = {
        "model": "medray-reasoner",
        "messages": [
            {"role": "user", "content": "x" * 30},
            {"role": "assistant", "content": "y" * 10},
            {"role": "user", "content": "z" * 30},
        ],
    }
    r = client.post("/v1/chat/completions", json=body)
    assert r.status_code == 422
    err = r.json()["error"]
    assert err["code"] == "prompt_too_long" and "limits.max_prompt_chars" in err["message"]
    assert "70 characters" in err["message"] and err["param"] == "messages"
    r = client.post("/generate", json={"question": "q" * 51})
    assert r.status_code == 422 and r.json()["error"]["code"] == "prompt_too_long"
    assert client.post("/v1/chat/completions", json=chat("x" * 40)).status_code == 200


class _Stalled:
    """A backend whose model calls never finish (a hung replica); the guard answers at once."""

    async def check_request(self, question, note=False):
        return SafetyReport()

    async def check_answer(self, text):
        return SafetyReport()

    async def answer_question(self, question, choices, params):
        await asyncio.sleep(3600)

    async def complete(self, messages, images, params, adapter):
        await asyncio.sleep(3600)

    async def reason(self, messages, images, params, adapter):
        await asyncio.sleep(3600)
        yield []


def test_time_limits_answer_504_or_end_the_stream_with_an_error_event(parts):
    from serve_apps.backend import LocalBackend

    stalled = backend_of(parts, type("StalledBackend", (_Stalled, LocalBackend), {}))
    client = client_of(stalled, timeouts={"generate_s": 0.3, "chat_s": 0.3, "analyze_s": 1.0})
    r = client.post("/generate", json={"question": "What is pneumonia?", "max_length": 2})
    assert r.status_code == 504
    err = r.json()["error"]
    assert err["code"] == "timeout" and "timeouts.generate_s" in err["message"]
    r = client.post("/v1/chat/completions", json=chat("What is pneumonia?"))
    assert r.status_code == 504 and "timeouts.chat_s" in r.json()["error"]["message"]

    with client.stream(
        "POST", "/v1/chat/completions", json=chat("What is pneumonia?", stream=True)
    ) as r:
        assert r.status_code == 200
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert json.loads(lines[-2][6:])["error"]["code"] == "timeout", lines

    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "gray").save(buf, "PNG")
    image = base64.b64encode(buf.getvalue()).decode()
    with client.stream("POST", "/v1/analyze", json={"image": image, "agent": False}) as r:
        events = list(read_events(r.iter_lines()))
    names = [name for name, _ in events]
    assert names[0] == "guard" and names[-1] == "error", names
    assert "timeouts.analyze_s" in events[-1][1]["message"]


def test_a_full_deployment_queue_is_a_503_with_retry_after(parts):
    from ray.serve.exceptions import BackPressureError

    from serve_apps.backend import LocalBackend

    class Full(LocalBackend):
        """Deployment handles raise this when max_queued_requests is reached."""

        async def complete(self, messages, images, params, adapter):
            raise BackPressureError(num_queued_requests=4, max_queued_requests=4)

        async def reason(self, messages, images, params, adapter):
            raise BackPressureError(num_queued_requests=4, max_queued_requests=4)
            yield []

    client = client_of(backend_of(parts, Full), timeouts={"retry_after_s": 3})
    r = client.post("/v1/chat/completions", json=chat("What is pneumonia?"))
    assert r.status_code == 503 and r.headers["retry-after"] == "3"
    assert r.json()["error"]["code"] == "overloaded"
    with client.stream(
        "POST", "/v1/chat/completions", json=chat("What is pneumonia?", stream=True)
    ) as r:
        lines = [ln for ln in r.iter_lines() if ln.startswith("data: ")]
    assert json.loads(lines[-2][6:])["error"]["code"] == "overloaded"


class CountingReasoner:
    """The real reasoner, counting the tokens its generation produces.

    After ``hold_at`` tokens it waits until the test says the client has left: the server
    reads ahead of a slow client (up to 256 events, ``iterate_in_thread``), so without
    the hold a loaded machine could finish all 256 tokens before the client reads three
    and leaves, and the test would check a schedule instead of the stop."""

    def __init__(self, inner, hold_at: int = 3) -> None:
        self.inner = inner
        self.tokens = 0
        self.hold_at = hold_at
        self.completed = False
        self.closed = threading.Event()
        self.left = threading.Event()

    def stream(self, messages, images, params, adapter):
        try:
            for ev in self.inner.stream(messages, images, params, adapter):
                if ev["type"] == "token":
                    self.tokens += 1
                elif ev["type"] == "final":
                    self.completed = True
                yield ev
                if self.tokens == self.hold_at:
                    assert self.left.wait(120), "the client never left"
        finally:
            self.closed.set()  # the inner generator is closed: its decoding thread joined


def _is_token(data_line: str, event: str) -> bool:
    """A streamed token: /v1/analyze's ``token`` event or a chat chunk with content."""
    if event:
        return event == "token"
    if data_line == "data: [DONE]":
        return False
    delta = json.loads(data_line[6:])["choices"][0]["delta"]
    return bool(delta.get("content"))


@pytest.mark.parametrize("endpoint", ["chat", "analyze"])
def test_a_client_that_leaves_mid_stream_stops_the_generation(parts, endpoint):
    counting = CountingReasoner(parts[1])
    client = client_of(backend_of(parts, reasoner=counting), generation={"max_new_tokens": 256})
    if endpoint == "chat":
        req = ("/v1/chat/completions", chat("Describe a chest radiograph.", stream=True))
        req[1]["max_tokens"] = 256
    else:
        import base64
        import io

        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (64, 64), "gray").save(buf, "PNG")
        image = base64.b64encode(buf.getvalue()).decode()
        req = ("/v1/analyze", {"image": image, "max_new_tokens": 256, "agent": False})
    with client:  # one event loop for the whole test, as in a server: it outlives the request
        with client.stream("POST", req[0], json=req[1]) as r:
            assert r.status_code == 200
            tokens_read, event = 0, ""
            for line in r.iter_lines():
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: ") and _is_token(line, event):
                    tokens_read += 1
                if counting.tokens >= counting.hold_at and tokens_read:
                    break  # leave mid-stream, the server streaming tokens to this client
        at_leave = counting.tokens
        counting.left.set()  # the generation may go on now: only the client's leaving stops it
        assert counting.closed.wait(30), "the generation was not closed after the client left"
        assert not counting.completed
        # A few tokens may be in flight when the client leaves; never the rest.
        assert counting.tokens - at_leave <= 16 and counting.tokens < 256
        assert not any(t.name == "medray-reasoner" and t.is_alive() for t in threading.enumerate())
