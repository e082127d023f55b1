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

Each deployment wraps a plain class that works without Serve; the model deployments live
in ``serve_apps.deployments``, the Gateway's and Agent's handle backend in
``serve_apps.serve_backend``. Resources, replicas, autoscaling and the queue bounds come
from the Serve config file (``serve_apps/configs/*.yaml``); the decorators carry bounded defaults (the local
profile's ``max_ongoing_requests`` / ``max_queued_requests``) so that no deployment ever
queues without limit: a full queue raises ``BackPressureError`` in the caller, which the
gateway answers as a JSON 503 with ``Retry-After`` (docs/hardening.md). Nothing is loaded at import time:
models load in each replica's constructor.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ray import serve
from ray.serve.handle import DeploymentHandle

from medray.serving.settings import AppArgs, parse_args
from serve_apps.deployments import (
    EmbedderDeployment,
    GuardDeployment,
    MedQADeployment,
    ReasonerDeployment,
    RetrieverDeployment,
    SummariserDeployment,
    check_loaded,
)
from serve_apps.serve_backend import ServeBackend

log = logging.getLogger("medray.serve")

APP_NAME = "medray"


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
        check_loaded(self.agent, "the agent")


# --------------------------------------------------------------------------- gateway


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
        check_loaded(self.backend, "the gateway's backend")

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
