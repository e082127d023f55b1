"""The MedRay Ray Serve application: one deployment per model, a FastAPI gateway.

Graph (``app_builder``)::

    Gateway (FastAPI ingress, serve_apps.gateway)
      -> Guard       (medray.serving.guard.Guard: domain control, emergencies, drug checks)
      -> Reasoner    (medray.serving.reasoner.Reasoner: VLM, streams steps; LoRA adapters
                      through serve.multiplexed, LRU-evicted)
      -> Summariser  (medray.serving.summariser.Summariser)
      -> MedQA       (medray.serving.medqa.MedQA: the text medical-QA model of /generate)
      -> Embedder    (medray.serving.embedder.Embedder: CLIP + sentence vectors,
                      @serve.batch dynamic batching)
      -> Retriever   (medray.serving.retriever.Retriever: Milvus cases + knowledge)
      -> Agent       (medray.agent.RagAgent: agentic RAG over the Reasoner, Embedder,
                      Retriever and Guard handles, streams agent events)

Each deployment wraps a plain class that works without Serve. Resources, replicas,
autoscaling and the queue bounds come from the Serve config file
(``serve_apps/configs/*.yaml``); the decorators carry bounded defaults (the local
profile's ``max_ongoing_requests`` / ``max_queued_requests``) so that no deployment ever
queues without limit: a full queue raises ``BackPressureError`` in the caller, which the
gateway answers as a JSON 503 with ``Retry-After`` (docs/hardening.md). Nothing is loaded at import time:
models load in each replica's constructor.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from ray import serve
from ray.exceptions import RayActorError
from ray.serve.handle import DeploymentHandle

from medray.serving.aio import iterate_in_thread
from medray.serving.reasoner import (
    GenerationParams,
    GenRequest,
    UnknownAdapterError,
    raise_error,
)
from medray.serving.retriever import RetrievalUnavailable
from medray.serving.settings import AppArgs, parse_args

log = logging.getLogger("medray.serve")

APP_NAME = "medray"
READY_RETRIEVER_S = 2.0  # /ready waits this long at most for the retriever's status


def _loaded(obj: Any, what: str) -> None:
    """``check_health``: Serve replaces a replica whose check raises."""
    if obj is None:
        raise RuntimeError(f"{what} is not loaded in this replica")


# --------------------------------------------------------------------------- deployments


@serve.deployment(name="Guard", max_ongoing_requests=32, max_queued_requests=64)
class GuardDeployment:
    """Serve wrapper of :class:`medray.serving.guard.Guard`."""

    def __init__(self, args: AppArgs) -> None:
        from medray.serving.guard import Guard

        self.guard = Guard(args.safety)

    async def check_request(self, question: str):
        return await asyncio.to_thread(self.guard.check_request, question)

    async def check_answer(self, text: str):
        return await asyncio.to_thread(self.guard.check_answer, text)

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        _loaded(self.guard, "the guard")


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
        _loaded(self.reasoner.base, "the reasoner model")


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
        _loaded(self.summariser, "the summariser")


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
        _loaded(self.medqa, "the medical-QA model")


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
        _loaded(self.embedder, "the embedder")


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
        _loaded(self.retriever, "the retriever")


@serve.deployment(name="Agent", max_ongoing_requests=16, max_queued_requests=32)
class AgentDeployment:
    """Serve wrapper of :class:`medray.agent.RagAgent`: its LLM is the Reasoner (through
    a LangChain chat model over the handle), its tools the Embedder and Retriever."""

    def __init__(
        self,
        guard: DeploymentHandle,
        reasoner: DeploymentHandle,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle | None,
        args: AppArgs,
    ) -> None:
        from medray.agent.factory import build_agent

        backend = ServeBackend(guard, reasoner, None, embedder, retriever)
        self.agent = build_agent(args.agent, backend, args.models.served_name)

    async def events(self, inputs):
        """Generator of ``(event, data)`` pairs (``RagAgent.events``)."""
        async for event in self.agent.events(inputs):
            yield event

    def ready(self) -> bool:
        return True

    def check_health(self) -> None:
        _loaded(self.agent, "the agent")


def _raise_or_return(result: Any) -> Any:
    """A batched call's per-request outcome: raise its error, or return its value."""
    if isinstance(result, Exception):
        raise result
    return result


# --------------------------------------------------------------------------- gateway


class ServeBackend:
    """:class:`serve_apps.backend.Backend` over deployment handles."""

    def __init__(
        self,
        guard: DeploymentHandle,
        reasoner: DeploymentHandle,
        summariser: DeploymentHandle,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle | None,
        agent: DeploymentHandle | None = None,
        medqa: DeploymentHandle | None = None,
    ) -> None:
        self.medqa = medqa
        self.guard = guard
        self.reasoner = reasoner
        self.summariser = summariser
        self.embedder = embedder
        self.retriever = retriever
        self.agent = agent

    @staticmethod
    async def _call(method, *args):
        """``method.remote(*args)``, once more if the replica died under the call (a crash,
        a killed process): Serve routes the retry to a live or replacement replica, so a
        lost replica fails no request. Every call here is a read or a generation."""
        try:
            return await method.remote(*args)
        except RayActorError as e:
            log.warning("a replica died under a call (%s); retrying it once", type(e).__name__)
            return await method.remote(*args)

    async def check_request(self, question):
        return await self._call(self.guard.check_request, question)

    async def check_answer(self, text):
        return await self._call(self.guard.check_answer, text)

    async def reason(self, messages, images, params, adapter):
        handle = self.reasoner.options(stream=True, multiplexed_model_id=adapter or "")
        args = (list(messages), list(images), params)
        # A streamed response cannot be handed to another deployment: consume, re-yield.
        # A replica that dies before the first chunk is retried once (nothing was sent).
        started = False
        try:
            async for chunk in handle.stream.remote(*args):
                started = True
                yield chunk
        except RayActorError as e:
            if started:
                raise
            log.warning("a Reasoner replica died before streaming (%s); retrying", type(e).__name__)
            async for chunk in handle.stream.remote(*args):
                yield chunk

    async def complete(self, messages, images, params, adapter):
        handle = self.reasoner.options(multiplexed_model_id=adapter or "")
        return await self._call(handle.generate, list(messages), list(images), params)

    async def summarise(self, caption, reasoning, answer):
        return await self._call(self.summariser.summarise, caption, list(reasoning), answer)

    async def answer_question(self, question, choices, params):
        if self.medqa is None:
            raise RuntimeError("the MedQA deployment is not part of this app")
        return await self._call(self.medqa.answer, question, choices, params)

    async def clip_image(self, image):
        return await self._call(self.embedder.clip_image, image)

    async def clip_text(self, text):
        return await self._call(self.embedder.clip_text, text)

    async def text_vector(self, text):
        return await self._call(self.embedder.text, text)

    async def _retrieval(self, call):
        if self.retriever is None:
            raise RetrievalUnavailable("retrieval is disabled in this app's config")
        try:
            return await call
        except Exception as e:
            # Errors raised in a replica arrive wrapped (RayTaskError); report the cause.
            cause = getattr(e, "cause", None) or e
            if isinstance(cause, RetrievalUnavailable):
                raise RetrievalUnavailable(str(cause)) from None
            raise RetrievalUnavailable(
                f"retriever failed: {type(cause).__name__}: {cause}"
            ) from None

    async def similar_cases(self, vector, field, k, filters):
        return await self._retrieval(
            self.retriever.similar_cases.remote(list(vector), field, k, filters)
            if self.retriever
            else None
        )

    async def knowledge(self, query, vector, k):
        return await self._retrieval(
            self.retriever.knowledge.remote(query, list(vector), k) if self.retriever else None
        )

    async def loaded_adapters(self):
        return await self.reasoner.loaded_adapters.remote()

    async def agent_events(self, inputs):
        if self.agent is None:
            raise RuntimeError("the Agent deployment is not part of this app (agent.enabled)")
        # A streamed response cannot be handed to another deployment: consume, re-yield.
        async for event in self.agent.options(stream=True).events.remote(inputs):
            yield event

    async def readiness(self):
        pairs = [
            (n, h)
            for n, h in zip(
                ("guard", "reasoner", "summariser", "embedder", "medqa"),
                (self.guard, self.reasoner, self.summariser, self.embedder, self.medqa),
                strict=True,
            )
            if h is not None
        ]
        names, handles = [n for n, _ in pairs], [h for _, h in pairs]
        results = await asyncio.gather(*(h.ready.remote() for h in handles), return_exceptions=True)
        status: dict[str, Any] = {n: r is True for n, r in zip(names, results, strict=True)}
        if self.retriever is not None:
            try:
                # Bounded: a dead Milvus must not hold /ready (the retriever degrades).
                status["retriever"] = await asyncio.wait_for(
                    self.retriever.status.remote(), READY_RETRIEVER_S
                )
            except Exception as e:
                status["retriever"] = {"milvus": f"{type(e).__name__}"}
        else:
            status["retriever"] = {"enabled": False}
        return status


class RayMetrics:
    """Prometheus metrics through Ray's metrics agent (scraped from every node)."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "medray_http_requests",
            description="HTTP requests by endpoint and status.",
            tag_keys=("endpoint", "status"),
        )
        self.latency = metrics.Histogram(
            "medray_http_request_latency_ms",
            description="HTTP request latency (ms) by endpoint.",
            boundaries=[5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000],
            tag_keys=("endpoint",),
        )
        self.events = metrics.Counter(
            "medray_events",
            description="Guard refusals and retrieval failures.",
            tag_keys=("event", "detail"),
        )

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        self.requests.inc(tags={"endpoint": endpoint, "status": str(status)})
        self.latency.observe(seconds * 1000, tags={"endpoint": endpoint})

    def count(self, name: str, tags: Mapping[str, str]) -> None:
        self.events.inc(tags={"event": name, "detail": ",".join(tags.values())})


@serve.deployment(name="Gateway", max_ongoing_requests=64, max_queued_requests=128)
@serve.ingress()
class Gateway:
    """FastAPI ingress: the HTTP API of ``serve_apps.gateway`` over deployment handles."""

    def __init__(
        self,
        guard: DeploymentHandle,
        reasoner: DeploymentHandle,
        summariser: DeploymentHandle,
        embedder: DeploymentHandle,
        retriever: DeploymentHandle | None,
        args: AppArgs,
        agent: DeploymentHandle | None = None,
        medqa: DeploymentHandle | None = None,
    ) -> None:
        self.args = args
        self.backend = ServeBackend(guard, reasoner, summariser, embedder, retriever, agent, medqa)

    def check_health(self) -> None:
        _loaded(self.backend, "the gateway's backend")

    def __serve_build_asgi_app__(self):
        from serve_apps.gateway import create_app

        return create_app(self.backend, self.args, RayMetrics())


# --------------------------------------------------------------------------- builder


def app_builder(args: dict[str, Any]) -> serve.Application:
    """Build the MedRay Serve graph from the config's ``args`` (see ``AppArgs``).

    Used as ``import_path: serve_apps.app:app_builder`` in the Serve config files.
    """
    cfg = parse_args(args)
    if cfg.auth.required() and not cfg.auth.keys():
        log.warning(
            "API keys are required for host %s; the Gateway reads them from $%s or the "
            "file %s in its replica",
            cfg.auth.listen_host,
            cfg.auth.api_keys_env,
            cfg.auth.api_keys_file or "(auth.api_keys_file unset)",
        )
    guard = GuardDeployment.bind(cfg)
    reasoner = ReasonerDeployment.bind(cfg)
    summariser = SummariserDeployment.bind(cfg)
    medqa = MedQADeployment.bind(cfg)
    embedder = EmbedderDeployment.bind(cfg)
    retriever = RetrieverDeployment.bind(cfg) if cfg.retrieval.enabled else None
    agent = (
        AgentDeployment.bind(guard, reasoner, embedder, retriever, cfg)
        if cfg.agent.enabled
        else None
    )
    return Gateway.bind(guard, reasoner, summariser, embedder, retriever, cfg, agent, medqa)
