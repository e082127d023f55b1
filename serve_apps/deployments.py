"""The model deployments of the MedRay Serve app: each wraps a plain class of
``medray.serving`` that works without Serve (see ``serve_apps.app`` for the graph).

Nothing is loaded at import time: models load in each replica's constructor. The
decorators carry bounded queue defaults; the Serve config file overrides them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve

from medray.serving.aio import iterate_in_thread
from medray.serving.reasoner import (
    GenerationParams,
    GenRequest,
    UnknownAdapterError,
    raise_error,
)
from medray.serving.settings import AppArgs


def check_loaded(obj: Any, what: str) -> None:
    """``check_health``: Serve replaces a replica whose check raises."""
    if obj is None:
        raise RuntimeError(f"{what} is not loaded in this replica")


@serve.deployment(name="Guard", max_ongoing_requests=32, max_queued_requests=64)
class GuardDeployment:
    """Serve wrapper of :class:`medray.serving.guard.Guard`."""

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.guard import Guard

        self.guard = Guard(args.safety)

    async def check_request(self, question: str, note: bool = False):
        return await asyncio.to_thread(self.guard.check_request, question, note)

    async def check_answer(self, text: str):
        return await asyncio.to_thread(self.guard.check_answer, text)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        check_loaded(self.guard, "the guard")


class _AdapterLease:
    """What ``serve.multiplexed`` caches per adapter; eviction detaches the adapter."""

    def __init__(self, reasoner, name: str) -> None:
        self.reasoner = reasoner
        self.name = name
        self.released = False

    def __del__(self) -> None:
        # Serve calls this on LRU eviction; garbage collection may call it again later.
        if not self.released:
            self.released = True
            self.reasoner.unload_adapter(self.name)


@serve.deployment(name="Reasoner", max_ongoing_requests=16, max_queued_requests=32)
class ReasonerDeployment:
    """Serve wrapper of :class:`medray.serving.reasoner.Reasoner`.

    The request's multiplexed model id (set by the gateway from the request's ``model``)
    names a LoRA adapter; ``serve.multiplexed`` loads adapters on demand, keeps
    ``max_loaded_adapters`` per replica and evicts the least recently used.
    """

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.reasoner import Reasoner

        self.reasoner = Reasoner(
            args.models.reasoner,
            adapters=args.adapters,
            default_params=GenerationParams(
                args.generation.max_new_tokens, args.generation.temperature
            ),
            device=args.models.device,
        )

        async def load_adapter(adapter_id: str) -> _AdapterLease:
            await asyncio.to_thread(self.reasoner.load_adapter, adapter_id)
            return _AdapterLease(self.reasoner, adapter_id)

        # Built here, not as a class decorator, so the cache size comes from the config.
        self._adapter = serve.multiplexed(max_num_models_per_replica=args.max_loaded_adapters)(
            load_adapter
        )

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Apply ``user_config``: ``max_batch_size`` and ``batch_wait_timeout_s``."""
        self._batched.set_max_batch_size(int(config.get("max_batch_size", 8)))
        self._batched.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.01)))

    async def _resolve_adapter(self) -> str | None:
        adapter = serve.get_multiplexed_model_id() or None
        if adapter is not None:
            if adapter not in self.reasoner.adapter_paths:
                raise UnknownAdapterError(f"unknown adapter {adapter!r}")
            await self._adapter(adapter)
        return adapter

    async def stream(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Any],
        params: GenerationParams,
    ):
        """Generator of reasoner event chunks (lists of ``Reasoner.stream`` events).

        Concurrent requests are decoded together (``@serve.batch`` over
        ``Reasoner.stream_many``): one forward pass per step for the whole batch.
        """
        adapter = await self._resolve_adapter()
        async for events in self._batched(GenRequest(messages, images, params, adapter)):
            raise_error(events)  # this request failed alone (the batch's others go on)
            if events:
                yield events

    async def generate(
        self,
        messages: Sequence[Mapping[str, Any]],
        images: Sequence[Any],
        params: GenerationParams,
    ) -> dict[str, Any]:
        """The final event only (for callers that do not stream), plus the step events."""
        adapter = await self._resolve_adapter()
        final: dict[str, Any] = {}
        steps: list[dict[str, Any]] = []
        async for events in self._batched(GenRequest(messages, images, params, adapter)):
            raise_error(events)
            for ev in events:
                if ev["type"] == "final":
                    final = ev
                elif ev["type"] == "step":
                    steps.append(ev)
        return {**final, "steps": steps}

    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.01)
    async def _batched(self, requests: list[GenRequest]):
        """One batched generation; yields, per chunk of decoding steps, each request's
        events (``StopIteration`` once a request has had its final event)."""
        finished = [False] * len(requests)
        # Steps that piled up while the previous chunk was being sent go out together.
        async for steps in iterate_in_thread(
            lambda: self.reasoner.stream_many(requests), coalesce=True
        ):
            out: list[Any] = []
            ended = []
            for i in range(len(requests)):
                if finished[i]:
                    out.append(StopIteration)
                    continue
                events = [ev for step in steps for ev in step[i]]
                if any(ev["type"] in ("final", "error") for ev in events):
                    ended.append(i)
                out.append(events)
            yield out
            for i in ended:
                finished[i] = True

    def loaded_adapters(self) -> list[str]:
        return self.reasoner.loaded_adapters()

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        check_loaded(self.reasoner.base, "the reasoner model")


@serve.deployment(name="Summariser", max_ongoing_requests=8, max_queued_requests=16)
class SummariserDeployment:
    """Serve wrapper of :class:`medray.serving.summariser.Summariser`."""

    def __init__(self, args: AppArgs) -> None:
        from medray.contracts.summariser import MAX_NEW_TOKENS
        from medray.serving.summariser import Summariser

        self.summariser = Summariser(
            args.models.summariser,
            args.generation.summary_tokens or MAX_NEW_TOKENS,
            args.models.device,
        )

    async def summarise(self, caption: str, reasoning: Sequence[str], answer: str):
        return await asyncio.to_thread(self.summariser.summarise, caption, reasoning, answer)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        check_loaded(self.summariser, "the summariser")


@serve.deployment(name="MedQA", max_ongoing_requests=8, max_queued_requests=16)
class MedQADeployment:
    """Serve wrapper of :class:`medray.serving.medqa.MedQA` (``POST /generate``)."""

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.medqa import MedQA

        self.medqa = MedQA(args.models.medqa, args.models.medqa_name, args.models.device)

    async def answer(self, question: str, choices: Sequence[str] | None, params: GenerationParams):
        return await asyncio.to_thread(self.medqa.answer, question, choices, params)

    def describe(self) -> dict[str, Any]:
        return self.medqa.describe()

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        check_loaded(self.medqa, "the medical-QA model")


@serve.deployment(name="Embedder", max_ongoing_requests=64, max_queued_requests=128)
class EmbedderDeployment:
    """Serve wrapper of :class:`medray.serving.embedder.Embedder` with ``@serve.batch``.

    Concurrent single requests are grouped into one forward pass. ``user_config``:
    ``max_batch_size``, ``batch_wait_timeout_s`` and ``torch_threads`` (intra-op threads
    of every forward pass; Ray's default for a fractional-CPU replica is 1). The
    ``*_unbatched`` methods run the same code on a batch of one per request, each in its
    own thread (the benchmark's comparison).

    A batch runs on the event loop itself, not in a worker thread: in a thread, the
    forward pass (small torch ops, mostly Python under the GIL) starved the loop that
    receives requests, so only 3-4 had arrived when the next batch started; blocking the
    loop for one batch lets every request that arrives meanwhile queue up in Ray's core
    worker and join the next batch (mean batch 3.5 -> 8-15 at c=32, see
    ``benchmarks/README.md``).
    """

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.embedder import Embedder

        self.embedder = Embedder(args.models.clip, args.models.text_embedder, args.models.device)
        self._stats: dict[str, list[float]] = {}  # method -> [batches, items, model seconds]

    def batch_stats(self, reset: bool = False) -> dict[str, dict[str, float]]:
        """Per method: batches run, mean batch size and model milliseconds per item (time
        inside the model call, so the rest of a request's time is serving overhead)."""
        out = {
            name: {
                "batches": int(b),
                "mean_size": round(n / b, 2) if b else 0.0,
                "model_ms_per_item": round(1000 * sec / n, 2) if n else 0.0,
            }
            for name, (b, n, sec) in self._stats.items()
        }
        if reset:
            self._stats = {}
        return out

    async def _run(self, name: str, fn, items: list[Any], inline: bool = False):
        """``fn(items)``, timed for :meth:`batch_stats`: in a worker thread, or with
        ``inline`` on the event loop itself (the batched methods, see the class doc)."""

        def timed():
            t0 = time.perf_counter()
            out = fn(items)
            return out, time.perf_counter() - t0

        out, seconds = timed() if inline else await asyncio.to_thread(timed)
        st = self._stats.setdefault(name, [0, 0, 0.0])
        st[0] += 1
        st[1] += len(items)
        st[2] += seconds
        return out

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Apply ``user_config``: ``max_batch_size``, ``batch_wait_timeout_s``,
        ``torch_threads``."""
        size = int(config.get("max_batch_size", 16))
        wait = float(config.get("batch_wait_timeout_s", 0.01))
        for method in (self.clip_image, self.clip_text, self.text):
            method.set_max_batch_size(size)
            method.set_batch_wait_timeout_s(wait)
        if config.get("torch_threads"):
            import torch

            torch.set_num_threads(int(config["torch_threads"]))

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def clip_image(self, images: list[Any]) -> list[list[float]]:
        return (
            await self._run("clip_image", self.embedder.clip_images, images, inline=True)
        ).tolist()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def clip_text(self, texts: list[str]) -> list[list[float]]:
        return (await self._run("clip_text", self.embedder.clip_texts, texts, inline=True)).tolist()

    @serve.batch(max_batch_size=16, batch_wait_timeout_s=0.01)
    async def text(self, texts: list[str]) -> list[list[float]]:
        return (await self._run("text", self.embedder.texts, texts, inline=True)).tolist()

    async def text_unbatched(self, text: str) -> list[float]:
        return (await self._run("text_unbatched", self.embedder.texts, [text]))[0].tolist()

    async def clip_image_unbatched(self, image: Any) -> list[float]:
        return (await self._run("clip_image_unbatched", self.embedder.clip_images, [image]))[
            0
        ].tolist()

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        check_loaded(self.embedder, "the embedder")


@serve.deployment(name="Retriever", max_ongoing_requests=64, max_queued_requests=128)
class RetrieverDeployment:
    """Serve wrapper of :class:`medray.serving.retriever.Retriever` with ``@serve.batch``.

    Concurrent searches go to Milvus as one multi-vector search (one round trip and one
    thread hop for the batch). Batch size and wait come from ``user_config``.
    """

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.retriever import Retriever

        check = args.retrieval.check_models
        self.retriever = Retriever(
            args.retrieval.milvus,
            clip_model=args.models.clip if check else "",
            text_model=args.models.text_embedder if check else "",
            timeout_s=args.retrieval.call_timeout_s,
            retry_after_s=args.retrieval.retry_after_s,
        )

    def reconfigure(self, config: Mapping[str, Any]) -> None:
        """Apply ``user_config``: ``max_batch_size`` and ``batch_wait_timeout_s``."""
        for method in (self._similar_cases, self._knowledge):
            method.set_max_batch_size(int(config.get("max_batch_size", 32)))
            method.set_batch_wait_timeout_s(float(config.get("batch_wait_timeout_s", 0.005)))

    async def similar_cases(self, vector, field, k, filters):
        return _raise_or_return(await self._similar_cases((vector, field, k, filters)))

    async def knowledge(self, query, vector, k):
        return _raise_or_return(await self._knowledge((query, vector, k)))

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _similar_cases(self, requests: list[tuple]) -> list[Any]:
        return await asyncio.to_thread(self.retriever.similar_cases_many, requests)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.005)
    async def _knowledge(self, requests: list[tuple]) -> list[Any]:
        return await asyncio.to_thread(self.retriever.knowledge_many, requests)

    async def status(self) -> dict[str, Any]:
        return await asyncio.to_thread(self.retriever.status)

    def check_health(self) -> None:
        """Healthy while the replica runs: a Milvus outage is not a replica fault (searches
        degrade and recover by themselves), so it must not make Serve restart replicas."""
        check_loaded(self.retriever, "the retriever")


def _raise_or_return(result: Any) -> Any:
    """A batched call's per-request outcome: raise its error, or return its value."""
    if isinstance(result, Exception):
        raise result
    return result
