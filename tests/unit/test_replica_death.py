"""A replica that dies under a call (benchmarks/faults.py case b): the gateway's backend
retries the call once, and a death that persists is a 503, not a 500."""

from __future__ import annotations

import asyncio

import pytest
from ray.exceptions import ActorDiedError

from serve_apps.http.errors import overloaded
from serve_apps.serve_backend import ServeBackend

pytestmark = pytest.mark.unit


class _Method:
    """The shape of a handle method: ``.remote(*args)`` gives an awaitable (or, for a
    stream, an async iterator); the first ``deaths`` calls die like a killed replica."""

    def __init__(self, deaths: int, chunks: list[str] | None = None, die_after: int = 0) -> None:
        self.deaths, self.chunks, self.die_after, self.calls = deaths, chunks, die_after, 0

    def remote(self, *args):
        self.calls += 1
        dead = self.calls <= self.deaths
        if self.chunks is None:

            async def answer():
                if dead:
                    raise ActorDiedError()
                return ("answer", args)

            return answer()

        async def stream():
            for i, chunk in enumerate(self.chunks):
                if dead and i == self.die_after:
                    raise ActorDiedError()
                yield chunk
            if dead:
                raise ActorDiedError()

        return stream()


class _Handle:
    def __init__(self, **methods) -> None:
        self.__dict__.update(methods)

    def options(self, **kwargs):
        return self


def _backend(reasoner: _Handle, guard: _Handle | None = None) -> ServeBackend:
    return ServeBackend(guard or _Handle(), reasoner, _Handle(), _Handle(), None)


def test_a_call_whose_replica_died_is_retried_once():
    generate = _Method(deaths=1)
    out = asyncio.run(_backend(_Handle(generate=generate)).complete(["m"], [], "p", None))
    assert out[0] == "answer" and generate.calls == 2
    check = _Method(deaths=1)
    assert asyncio.run(_backend(_Handle(), _Handle(check_request=check)).check_request("q"))
    assert check.calls == 2


def test_a_death_that_persists_is_a_503_not_a_500():
    generate = _Method(deaths=2)
    with pytest.raises(ActorDiedError) as info:
        asyncio.run(_backend(_Handle(generate=generate)).complete(["m"], [], "p", None))
    assert generate.calls == 2 and overloaded(info.value)


async def _collect(gen) -> list[str]:
    return [chunk async for chunk in gen]


def test_a_stream_is_retried_only_before_its_first_chunk():
    before = _Method(deaths=1, chunks=["a", "b"], die_after=0)
    backend = _backend(_Handle(stream=before))
    assert asyncio.run(_collect(backend.reason(["m"], [], "p", None))) == ["a", "b"]
    assert before.calls == 2
    # Chunks already went to the client: a retry would repeat them, so the error stands.
    during = _Method(deaths=1, chunks=["a", "b"], die_after=1)
    with pytest.raises(ActorDiedError):
        asyncio.run(_collect(_backend(_Handle(stream=during)).reason(["m"], [], "p", None)))
    assert during.calls == 1
