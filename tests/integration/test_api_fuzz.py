"""Schemathesis against the gateway's own OpenAPI, over real HTTP on 127.0.0.1 (issue 18.6).

The in-process app (no Ray: the plain classes with the real tiny models, Milvus
unreachable) is served by uvicorn in a thread; keys are required, so every authenticated
operation runs its key check. Every operation gets ``EXAMPLES`` generated requests (with
the valid key; every tenth with a wrong one, which must be a 401); each response must not
be a 5xx and must match the documented status codes, content types and schemas. Image
fields get real images, and some hostile ones (:mod:`fuzz_images`), so most requests
reach the models. The request count, the status histogram and the most frequent 4xx
codes are printed at the end.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time

import httpx
import pytest

schemathesis = pytest.importorskip("schemathesis")
from fuzz_images import image_payloads  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.specs.openapi import unregister_string_format  # noqa: E402

pytestmark = pytest.mark.integration

KEY = "fuzz-key-0123456789"
EXAMPLES = int(os.environ.get("MEDRAY_FUZZ_EXAMPLES", "170"))  # x 6 keyed operations: > 1,000
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)
HISTOGRAM: collections.Counter[tuple[str, int]] = collections.Counter()
CODES: collections.Counter[tuple[str, int, str]] = collections.Counter()  # 4xx error codes


def _png_b64() -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("L", (32, 32), 128).save(buf, "PNG")
    return base64.b64encode(buf.getvalue()).decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def api_url(tiny_models):
    import uvicorn

    from medray.agent import AgentSettings
    from medray.config import from_dict
    from medray.retrieval import MilvusSettings
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.retriever import Retriever
    from medray.serving.summariser import Summariser
    from serve_apps.backend import LocalBackend
    from serve_apps.gateway import create_app
    from serve_apps.settings import AppArgs

    os.environ["MEDRAY_FUZZ_KEYS"] = KEY
    # Nothing listens on port 1: search degrades ("available": false), analyze answers
    # without retrieval; the fault paths are fuzzed too.
    retriever = Retriever(
        MilvusSettings(uri="http://127.0.0.1:1", timeout_s=1), timeout_s=0.5, retry_after_s=30
    )
    backend = LocalBackend(
        Guard(),
        Reasoner(),
        Summariser(max_new_tokens=4),
        Embedder(),
        retriever,
        agent=AgentSettings(max_cycles=0, max_queries=1, max_new_tokens=4),
        medqa=MedQA(),
    )
    args = from_dict(
        AppArgs,
        {
            "auth": {"require": "always", "api_keys_env": "MEDRAY_FUZZ_KEYS"},
            "generation": {"max_new_tokens": 4, "max_new_tokens_limit": 8},
            "limits": {"max_question_chars": 300, "max_prompt_chars": 1200, "max_messages": 6},
            "rate_limit": {"enabled": False},
        },
    )
    app = create_app(backend, args)
    port = _free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)
    os.environ.pop("MEDRAY_FUZZ_KEYS", None)


def _stream_error(response) -> str | None:
    """The error a streamed 200 carries (a server error after the status was sent):
    an ``error`` event of /v1/analyze or an error chunk of a streamed chat."""
    content_type = response.headers.get("content-type") or [""]  # lists of values
    if not content_type[0].startswith("text/event-stream"):
        return None
    lines = response.text.splitlines()
    for i, line in enumerate(lines):
        if line == "event: error" and i + 1 < len(lines):
            return lines[i + 1][:300]
        if line.startswith('data: {"error"'):
            return line[:300]
    return None


def _run_operation(operation, api_url: str, failures: list[str]) -> None:
    op = f"{operation.method.upper()} {operation.path}"
    sent = collections.Counter()

    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case):
        sent[op] += 1
        wrong_key = sent[op] % 10 == 0 and operation.path not in ("/health", "/ready")
        headers = {"Authorization": f"Bearer {'wrong-' if wrong_key else ''}{KEY}"}
        response = case.call(base_url=api_url, headers=headers, timeout=60)
        HISTOGRAM[(op, response.status_code)] += 1
        if 400 <= response.status_code < 500:
            try:
                code = response.json()["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "?"
            CODES[(op, response.status_code, code)] += 1
        if wrong_key and response.status_code != 401:
            failures.append(f"{op}: a wrong key got {response.status_code}")
        if response.status_code == 200 and (error := _stream_error(response)):
            failures.append(f"{op}: a 200 stream ended in an error: {error}")
        try:
            case.validate_response(response, checks=CHECKS)
        except (
            Exception,
            BaseExceptionGroup,
        ) as e:  # every failure is collected, then reported together
            body = case.body if isinstance(case.body, dict) else repr(case.body)[:200]
            failures.append(f"{op} {response.status_code}: {str(e)[:600]}\n  body: {body!r:.400}")

    run()


@pytest.fixture
def image_format():
    """Image fields get real (and some hostile) images instead of random strings."""
    from serve_apps.http.openapi import IMAGE_FORMAT

    schemathesis.openapi.format(IMAGE_FORMAT, image_payloads())
    yield
    unregister_string_format(IMAGE_FORMAT)


def test_generated_requests_get_no_5xx_and_match_the_schema(api_url, image_format, capsys):
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [r.ok() for r in schema.get_all_operations()]
    assert len(operations) >= 8
    failures: list[str] = []
    start = time.monotonic()
    took = {}
    for operation in operations:
        t0 = time.monotonic()
        _run_operation(operation, api_url, failures)
        took[f"{operation.method.upper()} {operation.path}"] = time.monotonic() - t0
    elapsed = time.monotonic() - start
    total = sum(HISTOGRAM.values())
    by_status: collections.Counter[int] = collections.Counter()
    for (_, status), n in HISTOGRAM.items():
        by_status[status] += n
    with capsys.disabled():
        print(
            f"\nschemathesis: {total} requests over {len(operations)} operations in "
            f"{elapsed:.0f} s; status histogram {dict(sorted(by_status.items()))}"
        )
        for (op, status), n in sorted(HISTOGRAM.items()):
            print(f"  {op}: {status} x {n} ({took[op]:.0f} s for the operation)")
        codes = ", ".join(f"{op} {s} {c} x {n}" for (op, s, c), n in CODES.most_common(12))
        print(f"  most frequent 4xx codes: {codes}")
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    assert not [s for s in by_status if s >= 500]
    assert total >= 1000 or EXAMPLES < 170, total


# Regressions the schema work found: requests the document allows that the app refused.


def _post(api_url: str, path: str, body: dict) -> httpx.Response:
    headers = {"Authorization": f"Bearer {KEY}"}
    return httpx.post(f"{api_url}{path}", json=body, headers=headers, timeout=60)


def test_integer_fields_take_a_number_without_a_fraction(api_url):
    """JSON Schema's ``integer`` takes 4.0; the strict models refused it (a 422)."""
    image = _png_b64()
    assert _post(api_url, "/generate", {"question": "Is it normal?", "max_length": 4.0}).is_success
    assert _post(api_url, "/v1/search", {"image": image, "k": 2.0}).is_success
    r = _post(
        api_url, "/v1/analyze", {"image": image, "k": 1.0, "max_new_tokens": 2.0, "agent": False}
    )
    assert r.is_success and "event: done" in r.text
    for bad in (4.5, "4", True):
        r = _post(api_url, "/generate", {"question": "Is it normal?", "max_length": bad})
        assert r.status_code == 422 and r.json()["error"]["param"] == "max_length", bad


def test_generate_default_length_fits_a_lower_token_limit(api_url):
    """``max_length`` defaults to 100; under a limit of 8 a request without it was a 422."""
    r = _post(api_url, "/generate", {"question": "What are the symptoms of diabetes?"})
    assert r.is_success, r.text
    doc = httpx.get(f"{api_url}/openapi.json", timeout=30).json()
    length = doc["components"]["schemas"]["GenerateRequest"]["properties"]["max_length"]
    assert length["default"] == length["maximum"] == 8
    r = _post(api_url, "/generate", {"question": "Is it normal?", "max_length": 9})
    assert r.status_code == 422 and r.json()["error"]["code"] == "too_many_tokens"


def test_the_document_states_what_the_app_enforces(api_url):
    """Each constraint the document states is one the app answers with a 4xx."""
    from serve_apps.http.openapi import IMAGE_FORMAT

    schemas = httpx.get(f"{api_url}/openapi.json", timeout=30).json()["components"]["schemas"]
    chat = schemas["ChatCompletionRequest"]["properties"]
    assert chat["model"]["enum"] == ["medray-reasoner"]
    assert schemas["GenerateRequest"]["properties"]["model"]["anyOf"][0]["enum"] == ["medray-medqa"]
    assert schemas["AnalyzeRequest"]["properties"]["image"]["format"] == IMAGE_FORMAT
    assert chat["messages"]["contains"]["properties"]["role"] == {"const": "user"}
    assert len(schemas["SearchRequest"]["oneOf"]) == 2
    image, text = _png_b64(), "pleural effusion"
    refused = [
        ("/v1/chat/completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}),
        ("/generate", {"question": "x", "model": "medray-reasoner"}),  # not a QA model
        ("/v1/search", {"text": text, "image": image}),  # both
        ("/v1/search", {}),  # neither
        ("/v1/search", {"text": " \n"}),  # blank
        (
            "/v1/chat/completions",
            {"model": "medray-reasoner", "messages": [{"role": "system", "content": "x"}]},
        ),
        (
            "/v1/chat/completions",
            {
                "model": "medray-reasoner",
                "messages": [
                    {"role": "user", "content": "x"},
                    {
                        "role": "assistant",
                        "content": [{"type": "image_url", "image_url": {"url": image}}],
                    },
                ],
            },
        ),
    ]
    for path, body in refused:
        r = _post(api_url, path, body)
        assert r.status_code in (404, 422), (path, body, r.status_code)
    assert _post(api_url, "/v1/search", {"text": text, "image": None}).is_success


def test_a_denormal_temperature_is_greedy_not_a_500(api_url):
    """Found by the fuzz run: temperature 5e-324 made the sampler divide the logits to inf
    (RuntimeError: a 500 from /generate, an error event from /v1/analyze)."""
    for t in (5e-324, 1e-9):
        r = _post(api_url, "/generate", {"question": "=", "max_length": 2, "temperature": t})
        assert r.status_code == 200, r.text
        body = {"image": _png_b64(), "temperature": t, "max_new_tokens": 2, "agent": False}
        r = _post(api_url, "/v1/analyze", body)
        assert r.status_code == 200 and "event: error" not in r.text and "event: done" in r.text
        chat = {"model": "medray-reasoner", "temperature": t, "max_tokens": 2}
        r = _post(
            api_url,
            "/v1/chat/completions",
            {**chat, "messages": [{"role": "user", "content": "="}]},
        )
        assert r.status_code == 200, r.text
