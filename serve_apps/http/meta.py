"""About the service: ``GET /health`` and ``GET /ready`` (public), ``GET /v1/models``
(OpenAI-compatible) and ``GET /v1/adapters``."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse

from medray import __version__
from serve_apps.http.deps import Ctx, require_key

# Deployments that must answer for the models to count as loaded (retrieval is optional).
MODEL_PARTS = ("guard", "reasoner", "summariser", "embedder")

public = APIRouter()
router = APIRouter(dependencies=[Depends(require_key)])


@public.get("/health", summary="Liveness")
async def health(request: Request, ctx: Ctx) -> dict[str, Any]:
    """The gateway process is up; ``model_loaded``: every model deployment answers (checked
    here, 3 s at most, until it first does; afterwards the last ``/ready`` result)."""
    import torch

    state = request.app.state
    if not getattr(state, "ready", False):
        try:
            status = await asyncio.wait_for(ctx.backend.readiness(), timeout=3)
            state.ready = all(status.get(k) is True for k in MODEL_PARTS)
        except Exception:  # not answering yet: model_loaded stays false
            state.ready = False
    return {
        "status": "healthy",
        "model_loaded": bool(getattr(state, "ready", False)),
        "gpu_available": bool(torch.cuda.is_available()),
        "version": __version__,
    }


@public.get("/ready", summary="Readiness: every model answers")
async def ready(request: Request, ctx: Ctx):
    """200 when the guard, reasoner, summariser and embedder answer within 10 s;
    retrieval is reported but optional (the API degrades without it)."""
    try:
        status = await asyncio.wait_for(ctx.backend.readiness(), timeout=10)
    except Exception as e:
        request.app.state.ready = False
        return JSONResponse({"ready": False, "error": f"{type(e).__name__}: {e}"}, status_code=503)
    models_ok = all(status.get(k) is True for k in MODEL_PARTS)
    request.app.state.ready = models_ok
    return JSONResponse({"ready": models_ok, **status}, status_code=200 if models_ok else 503)


@router.get("/v1/models", summary="Models (OpenAI-compatible)")
async def list_models(ctx: Ctx) -> dict[str, Any]:
    """The base reasoner and every configured LoRA adapter (``/v1/chat/completions``,
    ``/v1/analyze``), then the text medical-QA model (``/generate``)."""
    created = int(time.time())
    served = [(n, "/v1/chat/completions") for n in ctx.args.model_names()]
    served += [(n, "/generate") for n in ctx.args.qa_model_names()]
    return {
        "object": "list",
        "data": [
            {
                "id": name,
                "object": "model",
                "created": created,
                "owned_by": "medray",
                "endpoint": endpoint,
            }
            for name, endpoint in served
        ],
    }


@router.get("/v1/adapters", summary="LoRA adapters: configured and loaded")
async def adapters(ctx: Ctx) -> dict[str, Any]:
    """Adapters load on demand and the least recently used are evicted."""
    return {
        "configured": sorted(ctx.args.adapters),
        "loaded": await ctx.backend.loaded_adapters(),
        "max_loaded_per_replica": ctx.args.max_loaded_adapters,
    }
