"""The HTTP API of MedRay, written once against :class:`serve_apps.backend.Backend`.

``create_app(backend, args)`` returns the FastAPI app: the Serve Gateway deployment
builds it with deployment handles behind the backend, the single-process baseline with
the plain classes. Endpoints:

- ``POST /v1/analyze``: image + optional question, answered as Server-Sent Events
  (``guard``, ``token``, ``step``, ``reasoning``, ``summary``, ``similar_cases``,
  ``knowledge``, ``agent_*`` (agentic RAG, ``medray.agent``), ``safety``, ``done``;
  ``error`` if something fails mid-stream).
- ``POST /v1/search``: text->image or image->text similar cases.
- ``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI-compatible, image content
  parts, ``stream=true``.
- ``POST /generate``: ``{question, temperature, max_length, use_safety}`` ->
  ``{response, safety_report, inference_time_ms}``.
- ``GET /v1/adapters``: configured and currently loaded LoRA adapters.
- ``GET /health`` (liveness) and ``GET /ready`` (every model answers).

Injected instructions: the guard checks the client's text (every user message of a chat)
and lists the sentences that try to instruct the system as ignored; models only ever see
the text without them (:func:`medray.serving.guard.model_text`), on every path (analyze,
chat, generate, the agent). The server's system prompt always comes first and cannot be
replaced: a client ``system``/``developer`` message is kept as a user-level note
(:data:`medray.serving.guard.CLIENT_NOTE` + its text), checked like a user message.

The code lives in :mod:`serve_apps.http`: one router per endpoint group (``meta``,
``generate``, ``analyze``, ``search``, ``chat``), the middleware, the error handlers and
the shared request checks (:class:`serve_apps.http.deps.Context`); this module only
assembles them.

Errors are JSON ``{"error": {"message", "type", "code", "param"}}`` (OpenAI's shape)
with a 4xx status for anything the client can fix. Logs carry request ids, sizes and
timings only: never image, prompt or answer text.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medray import DISCLAIMER, __version__
from medray.serving.audit import AuditLog
from serve_apps.backend import Backend
from serve_apps.http import analyze, chat, generate, meta, openapi, search
from serve_apps.http.deps import Context
from serve_apps.http.errors import APIError, error_body, install_handlers
from serve_apps.http.middleware import (
    AuditMiddleware,
    BodyLimitMiddleware,
    NullMetrics,
    install_request_log,
)
from serve_apps.settings import AppArgs

MODEL_PARTS = meta.MODEL_PARTS


def create_app(
    backend: Backend,
    args: AppArgs,
    metrics: Any = None,
    *,
    title: str = "MedRay",
) -> FastAPI:
    """Build the FastAPI app serving MedRay's HTTP API over ``backend``.

    Raises:
        ValueError: API keys are required (``args.auth``) but none are configured.
    """
    ctx = Context(backend, args, metrics or NullMetrics())
    app = FastAPI(
        title=title,
        version=__version__,
        description=(
            "Medical visual question answering and case retrieval on Ray Serve. "
            f"**{DISCLAIMER}** Authenticate with `Authorization: Bearer <key>` when keys are "
            "required (always beyond 127.0.0.1)."
        ),
    )
    app.state.backend = backend
    app.state.ctx = ctx
    app.add_middleware(BodyLimitMiddleware, limit=args.limits.max_body_bytes)
    install_handlers(app)
    install_request_log(app, ctx.metrics)
    if args.audit.enabled:  # outermost: it sees the request id and every status
        app.add_middleware(AuditMiddleware, audit=AuditLog(args.audit.file()))
    app.include_router(meta.public)
    for module in (meta, generate, analyze, search, chat):
        app.include_router(module.router)
    openapi.install(app, args)
    return app


__all__ = ["MODEL_PARTS", "APIError", "BodyLimitMiddleware", "create_app", "error_body"]
