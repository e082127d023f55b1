"""A full Serve deployment queue is a JSON 503 with ``Retry-After`` from the gateway.

Real Ray Serve: a deployment with ``max_ongoing_requests=1, max_queued_requests=1`` whose
calls wait on a latch, called through a deployment handle by the gateway's app
(``create_app`` over ``ServeBackend``) in this process. With one call running and one
queued, the next is refused by Serve's router (``BackPressureError``); which of two
concurrent extra calls gets the queue slot is up to the router, so the test asserts that
exactly one of them is refused, not which.
"""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

pytestmark = pytest.mark.integration

SERVE_PORT = 8050 + int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
APP = "overload-test"


@pytest.fixture(scope="module")
def gate(ray_cluster):
    import ray
    from ray import serve

    @ray.remote(num_cpus=0)
    class Latch:
        def __init__(self) -> None:
            self.entered = 0
            self.open = asyncio.Event()

        async def enter_and_wait(self) -> None:
            self.entered += 1
            await self.open.wait()

        def count(self) -> int:
            return self.entered

        def release(self) -> None:
            self.open.set()

    @serve.deployment(
        name="Gate",
        max_ongoing_requests=1,
        max_queued_requests=1,
        ray_actor_options={"num_cpus": 0},
    )
    class Gate:
        def __init__(self, latch) -> None:
            self.latch = latch

        async def answer(self, question, choices, params):
            await self.latch.enter_and_wait.remote()
            return {"text": "answer", "model": {"name": "gate"}}

    latch = Latch.remote()
    serve.start(http_options={"host": "127.0.0.1", "port": SERVE_PORT})
    handle = serve.run(Gate.bind(latch), name=APP, route_prefix=None)
    try:
        yield handle, latch
    finally:
        ray.get(latch.release.remote())
        serve.delete(APP)


def test_a_full_queue_is_a_json_503_with_retry_after(gate):
    import ray

    from medray.config import from_dict
    from serve_apps.gateway import create_app
    from serve_apps.serve_backend import ServeBackend
    from serve_apps.settings import AppArgs

    handle, latch = gate
    backend = ServeBackend(None, None, None, None, None, medqa=handle)
    app = create_app(backend, from_dict(AppArgs, {"timeouts": {"retry_after_s": 3}}))
    body = {"question": "What is pneumonia?", "use_safety": False, "max_length": 2}

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1", timeout=60
        ) as c:
            first = asyncio.create_task(c.post("/generate", json=body))
            deadline = time.monotonic() + 60
            while await asyncio.to_thread(ray.get, latch.count.remote()) < 1:
                assert time.monotonic() < deadline, "the first call never reached the replica"
                await asyncio.sleep(0.05)
            second = asyncio.create_task(c.post("/generate", json=body))
            third = asyncio.create_task(c.post("/generate", json=body))
            done, _ = await asyncio.wait({second, third}, return_when=asyncio.FIRST_COMPLETED)
            refused = done.pop().result()  # the one without a queue slot answers at once
            await asyncio.to_thread(ray.get, latch.release.remote())
            return refused, await first, await second, await third

    refused, *all_three = asyncio.run(scenario())
    assert refused.status_code == 503, refused.text
    assert refused.headers["retry-after"] == "3"
    err = refused.json()["error"]
    assert err["code"] == "overloaded" and "retry after 3 s" in err["message"]
    assert sorted(r.status_code for r in all_three) == [200, 200, 503]
