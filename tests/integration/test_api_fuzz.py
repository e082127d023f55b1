"""Schemathesis against the gateway's own OpenAPI, over real HTTP on 127.0.0.1 (issue 18.6).

The in-process app (no Ray: the plain classes with the real tiny models, Milvus
unreachable) is served by uvicorn in a thread; keys are required, so every authenticated
operation runs its key check. Every operation gets ``EXAMPLES`` generated requests (with
the valid key; every tenth with a wrong one, which must be a 401); each response must not
be a 5xx and must match the documented status codes, content types and schemas. The
request count and the status histogram are printed at the end of the module.
"""

from __future__ import annotations

import collections
import os
import socket
import threading
import time

import pytest

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.integration

KEY = "fuzz-key-0123456789"
EXAMPLES = int(os.environ.get("MEDRAY_FUZZ_EXAMPLES", "130"))  # x 8 operations: over 1,000 requests
CHECKS = (
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
)
HISTOGRAM: collections.Counter[tuple[str, int]] = collections.Counter()


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
        if wrong_key and response.status_code != 401:
            failures.append(f"{op}: a wrong key got {response.status_code}")
        try:
            case.validate_response(response, checks=CHECKS)
        except (
            Exception,
            BaseExceptionGroup,
        ) as e:  # every failure is collected, then reported together
            body = case.body if isinstance(case.body, dict) else repr(case.body)[:200]
            failures.append(f"{op} {response.status_code}: {str(e)[:600]}\n  body: {body!r:.400}")

    run()


def test_generated_requests_get_no_5xx_and_match_the_schema(api_url, capsys):
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
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])
    assert not [s for s in by_status if s >= 500]
    assert total >= 1000 or EXAMPLES < 130, total
