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

Errors are JSON ``{"error": {"message", "type", "code", "param"}}`` (OpenAI's shape)
with a 4xx status for anything the client can fix. Logs carry request ids, sizes and
timings only: never image, prompt or answer text.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Mapping
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from PIL import Image
from starlette.exceptions import HTTPException as StarletteHTTPException

from medray import DISCLAIMER, __version__
from medray.agent import AgentInput
from medray.contracts import reasoner as reasoner_contract
from medray.models.generate import GenerationParams
from medray.safety import SafetyReport, merge
from medray.serving.guard import CLIENT_NOTE, merge_requests, model_text
from medray.serving.images import ImageError, decode_base64, http_status, open_image
from medray.serving.retriever import RetrievalUnavailable
from medray.serving.sse import format_event
from serve_apps.backend import Backend
from serve_apps.schemas import (
    AnalyzeRequest,
    ChatCompletionRequest,
    GenerateRequest,
    ImagePart,
    SearchRequest,
)
from serve_apps.settings import AppArgs

log = logging.getLogger("medray.gateway")

# Deployments that must answer for the models to count as loaded (retrieval is optional).
MODEL_PARTS = ("guard", "reasoner", "summariser", "embedder")


class APIError(Exception):
    """An error the client gets as JSON with a status code.

    Args:
        status: HTTP status.
        message: what is wrong and how to fix it.
        code: machine-readable code.
        param: the request field at fault, if any.
        type: OpenAI-style error type.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param, self.type = (
            status,
            message,
            code,
            param,
            type,
        )


def error_body(message: str, code: str, type: str, param: str | None = None) -> dict[str, Any]:
    """The JSON error shape of every endpoint."""
    return {"error": {"message": message, "type": type, "code": code, "param": param}}


def _validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    parts: list[str] = []
    first_param: str | None = None
    for err in exc.errors():
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body",)]
        # Drop pydantic's union-branch names (e.g. "list[...]", "str") from locations.
        loc = [x for x in loc if not x.startswith(("list[", "function-", "tagged-union"))]
        field = ".".join(loc)
        kind = err.get("type", "")
        if not loc and kind in ("model_attributes_type", "dict_type", "model_type"):
            parts.append(
                "the request body must be a JSON object (send Content-Type: application/json)"
            )
            continue
        if kind == "json_invalid":
            parts.append("the request body is not valid JSON")
            continue
        if kind == "missing":
            msg = "is required"
        elif kind == "extra_forbidden":
            msg = "is not a known field"
        else:
            msg = err.get("msg", "is invalid").replace("Input should be", "should be")
            if "input" in err and kind.endswith("_type"):
                msg += f" (got {type(err['input']).__name__})"
        if field and first_param is None:
            first_param = field
        parts.append(f"{field} {msg}" if field else msg)
    if not parts:
        parts.append("the request body is invalid")
    return "; ".join(dict.fromkeys(parts)), first_param


class BodyLimitMiddleware:
    """Refuse request bodies over ``limit`` bytes with a 413 before the app reads them."""

    def __init__(self, app, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send, int(length))
        seen = 0
        too_big = False

        async def limited_receive():
            nonlocal seen, too_big
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    too_big = True
                    raise _BodyTooLarge
            return message

        replaced = False

        async def guarded_send(message):
            # FastAPI turns an exception while reading the body into its own 400; once
            # the limit was crossed, send the 413 instead of whatever the app answers.
            nonlocal replaced
            if too_big:
                if not replaced:
                    replaced = True
                    await self._reject(send, seen)
                return
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except _BodyTooLarge:
            if not replaced:
                replaced = True
                await self._reject(send, seen)

    async def _reject(self, send, size: int) -> None:
        body = json.dumps(
            error_body(
                f"request body of {size} bytes exceeds the limit of {self.limit} bytes "
                "(limits.max_body_bytes); send a smaller image",
                "body_too_large",
                "invalid_request_error",
            )
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(Exception):
    pass


class _Refused(Exception):
    """The guard refused an analyze request: skip to the safety report."""


class _NullMetrics:
    """Metrics sink that drops everything (the Serve app plugs in Ray's metrics)."""

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        pass

    def count(self, name: str, tags: Mapping[str, str]) -> None:
        pass


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
    metrics = metrics or _NullMetrics()
    keys = args.auth.keys()
    keys_required = args.auth.required()
    if keys_required and not keys:
        raise ValueError(
            f"API keys are required (the app listens on {args.auth.listen_host!r}, "
            f"auth.require={args.auth.require!r}) but none are configured: set "
            f"{args.auth.api_keys_env} or auth.api_keys"
        )
    limits = args.limits
    gen = args.generation

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
    app.add_middleware(BodyLimitMiddleware, limit=limits.max_body_bytes)

    # ------------------------------------------------------------------ errors, logs

    @app.exception_handler(APIError)
    async def _api_error(request: Request, exc: APIError):
        return JSONResponse(
            error_body(exc.message, exc.code, exc.type, exc.param), status_code=exc.status
        )

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, param = _validation_message(exc)
        return JSONResponse(
            error_body(message, "invalid_request", "invalid_request_error", param), status_code=422
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(str(exc.detail), code, "invalid_request_error"),
            status_code=exc.status_code,
        )

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        rid = getattr(request.state, "request_id", "-")
        log.error("request %s failed: %s", rid, type(exc).__name__)
        return JSONResponse(
            error_body(
                f"internal error ({type(exc).__name__}); request id {rid}",
                "internal_error",
                "server_error",
            ),
            status_code=500,
        )

    @app.middleware("http")
    async def _log_requests(request: Request, call_next):
        rid = request.headers.get("x-request-id") or uuid.uuid4().hex[:16]
        request.state.request_id = rid
        t0 = time.perf_counter()
        status = 500
        try:
            response = await call_next(request)
            status = response.status_code
            response.headers["x-request-id"] = rid
            return response
        finally:
            dt = time.perf_counter() - t0
            log.info(
                "request id=%s %s %s status=%s body_bytes=%s ms=%.1f",
                rid,
                request.method,
                request.url.path,
                status,
                request.headers.get("content-length", "0"),
                dt * 1000,
            )
            metrics.observe(request.url.path, status, dt)

    # ------------------------------------------------------------------ auth

    async def require_key(request: Request) -> None:
        if not keys_required:
            return
        header = request.headers.get("authorization", "")
        scheme, _, token = header.partition(" ")
        if not header:
            raise APIError(
                401,
                "missing API key: send the header 'Authorization: Bearer <key>'",
                "missing_api_key",
                type="authentication_error",
            )
        if scheme.lower() != "bearer" or not token.strip():
            raise APIError(
                401,
                "malformed Authorization header: expected 'Bearer <key>'",
                "invalid_api_key",
                type="authentication_error",
            )
        if not any(hmac.compare_digest(token.strip().encode(), k.encode()) for k in keys):
            raise APIError(401, "invalid API key", "invalid_api_key", type="authentication_error")

    public = APIRouter()
    api = APIRouter(dependencies=[Depends(require_key)])

    # ------------------------------------------------------------------ helpers

    def check_question(text: str, field: str, *, allow_empty: bool) -> str:
        q = text.strip()
        if not q and not allow_empty:
            raise APIError(422, f"{field} is empty: ask a question", "empty_question", field)
        if len(q) > limits.max_question_chars:
            raise APIError(
                422,
                f"{field} has {len(q)} characters, over the limit of {limits.max_question_chars} "
                "(limits.max_question_chars)",
                "question_too_long",
                field,
            )
        return q

    def decode(data: str, field: str) -> Image.Image:
        try:
            raw = decode_base64(data, field)
            img = open_image(raw, limits.max_image_pixels, limits.max_image_side, field)
        except ImageError as e:
            raise APIError(http_status(e), str(e), e.code, field) from None
        return img

    def pick_adapter(model: str | None, field: str = "model") -> str | None:
        if model is None or model == args.models.served_name:
            return None
        if model in args.adapters:
            return model
        raise APIError(
            404,
            f"the model {model!r} does not exist; available models: {', '.join(args.model_names())}",
            "model_not_found",
            field,
        )

    def tokens_for(requested: int | None, field: str) -> int:
        n = requested if requested is not None else gen.max_new_tokens
        if n > gen.max_new_tokens_limit:
            raise APIError(
                422,
                f"{field} is {n}, over the limit of {gen.max_new_tokens_limit}",
                "too_many_tokens",
                field,
            )
        return n

    def report_dict(report: SafetyReport) -> dict[str, Any]:
        return report.to_dict()

    async def timed(coro: Awaitable[Any]) -> tuple[Any, float]:
        t0 = time.perf_counter()
        out = await coro
        return out, (time.perf_counter() - t0) * 1000

    # ------------------------------------------------------------------ health

    @public.get("/health", summary="Liveness")
    async def health() -> dict[str, Any]:
        """The gateway process is up; ``model_loaded``: every model deployment answers (checked
        here, 3 s at most, until it first does; afterwards the last ``/ready`` result)."""
        import torch

        if not getattr(app.state, "ready", False):
            try:
                status = await asyncio.wait_for(backend.readiness(), timeout=3)
                app.state.ready = all(status.get(k) is True for k in MODEL_PARTS)
            except Exception:  # not answering yet: model_loaded stays false
                app.state.ready = False
        return {
            "status": "healthy",
            "model_loaded": bool(getattr(app.state, "ready", False)),
            "gpu_available": bool(torch.cuda.is_available()),
            "version": __version__,
        }

    @public.get("/ready", summary="Readiness: every model answers")
    async def ready():
        """200 when the guard, reasoner, summariser and embedder answer within 10 s;
        retrieval is reported but optional (the API degrades without it)."""
        try:
            status = await asyncio.wait_for(backend.readiness(), timeout=10)
        except Exception as e:
            app.state.ready = False
            return JSONResponse(
                {"ready": False, "error": f"{type(e).__name__}: {e}"}, status_code=503
            )
        models_ok = all(status.get(k) is True for k in MODEL_PARTS)
        app.state.ready = models_ok
        return JSONResponse({"ready": models_ok, **status}, status_code=200 if models_ok else 503)

    # ------------------------------------------------------------------ models

    @api.get("/v1/models", summary="Models (OpenAI-compatible)")
    async def list_models() -> dict[str, Any]:
        """The base reasoner and every configured LoRA adapter (``/v1/chat/completions``,
        ``/v1/analyze``), then the text medical-QA model (``/generate``)."""
        created = int(time.time())
        served = [(n, "/v1/chat/completions") for n in args.model_names()]
        served += [(n, "/generate") for n in args.qa_model_names()]
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

    @api.get("/v1/adapters", summary="LoRA adapters: configured and loaded")
    async def adapters() -> dict[str, Any]:
        """Adapters load on demand and the least recently used are evicted."""
        return {
            "configured": sorted(args.adapters),
            "loaded": await backend.loaded_adapters(),
            "max_loaded_per_replica": args.max_loaded_adapters,
        }

    # ------------------------------------------------------------------ /generate

    @api.post(
        "/generate", summary="Text medical QA: {question, temperature, max_length, use_safety}"
    )
    async def generate(body: GenerateRequest, request: Request) -> dict[str, Any]:
        """Answer a text question with the medical-QA model (``body.model``: one of
        ``args.qa_model_names()``, default the configured one). Returns ``{response,
        model, safety_report, inference_time_ms}``; ``model`` says which weights answered."""
        question = check_question(body.question, "question", allow_empty=False)
        if body.model is not None and body.model not in args.qa_model_names():
            raise APIError(
                404,
                f"the model {body.model!r} does not answer /generate; text QA models: "
                f"{', '.join(args.qa_model_names())}",
                "model_not_found",
                "model",
                "invalid_request_error",
            )
        max_new = tokens_for(body.max_length, "max_length")
        if body.use_safety:
            req_report = await backend.check_request(question)
            if req_report.refused:
                metrics.count("medray_guard_refusals", {"endpoint": "/generate"})
                return {
                    "response": req_report.refusal,
                    "model": None,
                    "safety_report": report_dict(req_report),
                    "inference_time_ms": 0.0,
                }
        t0 = time.perf_counter()
        answer = await backend.answer_question(
            model_text(question), None, GenerationParams(max_new, body.temperature)
        )
        ms = (time.perf_counter() - t0) * 1000
        text = answer.get("text", "")
        if body.use_safety:
            report = merge(req_report, await backend.check_answer(text))
        else:
            report = SafetyReport(
                warnings=("safety checks were disabled for this request (use_safety=false)",)
            )
        return {
            "response": text,
            "model": answer.get("model"),
            "safety_report": report_dict(report),
            "inference_time_ms": round(ms, 1),
        }

    # ------------------------------------------------------------------ /v1/analyze

    @api.post(
        "/v1/analyze",
        summary="Analyze an image (Server-Sent Events)",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {"text/event-stream": {}},
                "description": "SSE stream: guard, token, step, reasoning, summary, "
                "similar_cases, knowledge, then the agent's events (agent_diagnoses, "
                "agent_queries, agent_sources, agent_draft, agent_reflection, agent_revision "
                "per revision cycle, agent_answer with citations, confidence, safety report, "
                'disclaimer and trace; skipped with "agent": false), safety, done.',
            }
        },
    )
    async def analyze(body: AnalyzeRequest, request: Request):
        """Stream the analysis of one image as Server-Sent Events, in order:
        ``guard`` (allowed or refused), ``token`` (raw reasoning text, if enabled),
        ``step`` (caption / each reasoning step / answer as soon as it is complete),
        ``reasoning`` (the parsed answer with repairs and errors), ``summary``,
        ``similar_cases``, ``knowledge``, the agent's events (``agent_diagnoses``,
        ``agent_queries``, ``agent_sources``, ``agent_draft``, ``agent_reflection``,
        ``agent_revision`` for each revision cycle and ``agent_answer``: findings, most
        likely diagnosis, differential, severity, next steps, citations to retrieved items
        only, confidence, what is missing, safety report, disclaimer, trace; off with
        ``"agent": false``), ``safety`` (the report, with the disclaimer) and ``done``
        (timings). Input errors are 4xx JSON before the stream starts."""
        image = decode(body.image, "image")
        question = check_question(body.question, "question", allow_empty=True)
        adapter = pick_adapter(body.model)
        k = min(body.k, limits.max_k)
        params = GenerationParams(
            tokens_for(body.max_new_tokens, "max_new_tokens"),
            gen.temperature if body.temperature is None else body.temperature,
        )
        rid = request.state.request_id
        log.info("analyze id=%s image=%dx%d question_chars=%d", rid, *image.size, len(question))
        return StreamingResponse(
            _analyze_stream(
                rid, image, question, adapter, params, k, body.agent and args.agent.enabled
            ),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-request-id": rid},
        )

    async def _analyze_stream(
        rid, image, question, adapter, params, k, use_agent=False
    ) -> AsyncIterator[str]:
        t_start = time.perf_counter()
        timings: dict[str, float] = {}
        reports: list[SafetyReport] = []
        cases_task: asyncio.Task | None = None
        check_task: asyncio.Task | None = None
        try:
            req_report, timings["guard"] = await timed(backend.check_request(question))
            reports.append(req_report)
            if req_report.refused:
                metrics.count("medray_guard_refusals", {"endpoint": "/v1/analyze"})
                yield format_event("guard", {"allowed": False, "message": req_report.refusal})
                raise _Refused
            yield format_event(
                "guard",
                {
                    "allowed": True,
                    "warnings": list(req_report.warnings),
                    "notices": list(req_report.notices),
                },
            )
            if args.retrieval.enabled:
                # Similar cases need only the image: search while the reasoner works.
                cases_task = asyncio.create_task(_similar_cases(image, k))
            question = model_text(question)  # the guard reported what was removed
            messages = _reasoner_messages(question)
            final: dict[str, Any] = {}
            t0 = time.perf_counter()
            async for chunk in backend.reason(messages, [image], params, adapter):
                out = []
                for ev in chunk:
                    if ev["type"] == "token":
                        if args.stream_tokens:
                            out.append(format_event("token", {"text": ev["text"]}))
                    elif ev["type"] == "step":
                        out.append(
                            format_event("step", {k2: v for k2, v in ev.items() if k2 != "type"})
                        )
                    elif ev["type"] == "final":
                        final = ev
                if out:
                    yield "".join(out)  # one write per chunk of events
            timings["reasoning"] = (time.perf_counter() - t0) * 1000
            parse = final.get("parse", {})
            value = parse.get("value") or {}
            yield format_event(
                "reasoning",
                {
                    "text": final.get("text", ""),
                    "parsed": value or None,
                    "ok": parse.get("ok", False),
                    "repaired": parse.get("repaired", []),
                    "errors": parse.get("errors", []),
                    "completion_tokens": final.get("completion_tokens", 0),
                    "finish_reason": final.get("finish_reason"),
                    "model": final.get("model"),
                },
            )
            summary, timings["summary"] = await timed(
                backend.summarise(
                    value.get("caption", ""), value.get("reasoning", []), value.get("answer", "")
                )
            )
            yield format_event(
                "summary", {"text": summary["summary"], "model": summary.get("model")}
            )
            # The answer check needs only the generated text: run it beside retrieval.
            check_task = asyncio.create_task(
                timed(backend.check_answer(f"{final.get('text', '')}\n{summary['summary']}"))
            )
            if cases_task is not None:
                cases, ms = await cases_task
                timings["similar_cases"] = ms
                yield format_event("similar_cases", cases)
                query = (
                    " ".join(
                        x for x in (summary["summary"], value.get("answer", ""), question) if x
                    ).strip()
                    or "chest radiograph findings"
                )
                knowledge, timings["knowledge"] = await timed(_knowledge(query, k))
                yield format_event("knowledge", knowledge)
            else:
                cases = off = {"hits": [], "error": "retrieval is disabled in this app's config"}
                yield format_event("similar_cases", off)
                yield format_event("knowledge", off)
            if use_agent:
                t0 = time.perf_counter()
                agent_input = AgentInput(
                    question=question,
                    reasoning_text=final.get("text", ""),
                    parsed=value or None,
                    reasoning_ok=bool(parse.get("ok", False)),
                    summary=summary["summary"],
                    image_cases=cases.get("hits", []),
                )
                async for name, data in _agent_events(rid, agent_input, reports):
                    yield format_event(name, data)
                timings["agent"] = (time.perf_counter() - t0) * 1000
            answer_report, timings["answer_check"] = await check_task
            reports.append(answer_report)
        except _Refused:
            pass  # only the safety report and done follow a refusal
        except asyncio.CancelledError:
            log.info("analyze id=%s: client disconnected", rid)
            raise
        except Exception as e:
            log.error("analyze id=%s failed: %s", rid, type(e).__name__)
            yield format_event(
                "error", {"message": f"analysis failed ({type(e).__name__}); request id {rid}"}
            )
        finally:
            for task in (cases_task, check_task):
                if task is not None and not task.done():
                    task.cancel()
        yield format_event("safety", report_dict(merge(*reports) if reports else SafetyReport()))
        total = (time.perf_counter() - t_start) * 1000
        yield format_event(
            "done",
            {
                "request_id": rid,
                "timings_ms": {k2: round(v, 1) for k2, v in timings.items()},
                "inference_time_ms": round(total, 1),
            },
        )

    async def _agent_events(rid, agent_input, reports: list[SafetyReport]):
        """The agent's events; a failing agent is an ``error`` event, not a failed stream."""
        try:
            async for name, data in backend.agent_events(agent_input):
                if name == "agent_answer":
                    text = "\n".join(
                        [
                            *data["findings"],
                            data["most_likely_diagnosis"] or "",
                            *data["next_steps"],
                        ]
                    )
                    reports.append(await backend.check_answer(text))
                yield name, data
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.error("analyze id=%s: agent failed: %s", rid, type(e).__name__)
            yield "error", {"message": f"the agent failed ({type(e).__name__}); request id {rid}"}

    def _reasoner_messages(question: str) -> list[dict[str, Any]]:
        return reasoner_contract.messages(question, True)

    async def _similar_cases(image: Image.Image, k: int) -> tuple[dict[str, Any], float]:
        t0 = time.perf_counter()
        try:
            vec = await backend.clip_image(image)
            hits = await backend.similar_cases(vec, "image", k, None)
            out: dict[str, Any] = {"hits": hits}
        except RetrievalUnavailable as e:
            metrics.count("medray_retrieval_failures", {"what": "similar_cases"})
            out = {"hits": [], "error": str(e)}
        return out, (time.perf_counter() - t0) * 1000

    async def _knowledge(query: str, k: int) -> dict[str, Any]:
        try:
            vec = await backend.text_vector(query)
            return {"hits": await backend.knowledge(query, vec, k)}
        except RetrievalUnavailable as e:
            metrics.count("medray_retrieval_failures", {"what": "knowledge"})
            return {"hits": [], "error": str(e)}

    # ------------------------------------------------------------------ /v1/search

    @api.post("/v1/search", summary="Similar cases: text->image or image->text")
    async def search(body: SearchRequest, request: Request) -> dict[str, Any]:
        """``text``: cases whose image matches the description (CLIP text vector against
        image vectors); ``image``: cases whose report matches the image (CLIP image vector
        against report vectors). If Milvus is down or a collection is missing the answer
        is ``available: false`` with the reason, not a server error."""
        if (body.text is None) == (body.image is None):
            raise APIError(
                422,
                "send exactly one of 'text' (text->image search) or 'image' (image->text search)",
                "invalid_request",
                "text",
            )
        k = min(body.k, limits.max_k)
        report = SafetyReport()
        if body.text is not None:
            text = check_question(body.text, "text", allow_empty=False)
            report = await backend.check_request(text)
            if report.refused:
                metrics.count("medray_guard_refusals", {"endpoint": "/v1/search"})
                return {
                    "mode": "text_to_image",
                    "available": True,
                    "hits": [],
                    "message": report.refusal,
                    "safety_report": report_dict(report),
                }
            mode, vec = "text_to_image", await backend.clip_text(text)
            field = "image"
        else:
            image = decode(body.image, "image")
            mode, vec = "image_to_text", await backend.clip_image(image)
            field = "text"
        if not args.retrieval.enabled:
            return {
                "mode": mode,
                "available": False,
                "hits": [],
                "error": "retrieval is disabled in this app's config",
                "safety_report": report_dict(report),
            }
        try:
            hits = await backend.similar_cases(vec, field, k, body.filters)
        except RetrievalUnavailable as e:
            msg = str(e)
            if "cannot filter on" in msg:
                raise APIError(422, msg.split(": ", 1)[-1], "invalid_filter", "filters") from None
            metrics.count("medray_retrieval_failures", {"what": "search"})
            return {
                "mode": mode,
                "available": False,
                "hits": [],
                "error": msg,
                "safety_report": report_dict(report),
            }
        return {"mode": mode, "available": True, "hits": hits, "safety_report": report_dict(report)}

    # ------------------------------------------------------------------ chat

    def _chat_inputs(
        body: ChatCompletionRequest,
    ) -> tuple[list[dict[str, Any]], list[Image.Image], list[str]]:
        if len(body.messages) > limits.max_messages:
            raise APIError(
                422,
                f"{len(body.messages)} messages, over the limit of {limits.max_messages}",
                "too_many_messages",
                "messages",
            )
        messages: list[dict[str, Any]] = []
        images: list[Image.Image] = []
        last_user = ""
        user_texts: list[str] = []  # what the guard checks: every user-level text, raw
        for i, m in enumerate(body.messages):
            # The server's system prompt cannot be replaced: a client's is a user note.
            note = m.role in ("system", "developer")
            role = "user" if note else m.role
            parts: list[dict[str, Any]] = []
            if isinstance(m.content, str):
                parts.append({"type": "text", "text": m.content})
            elif m.content:
                for j, p in enumerate(m.content):
                    if isinstance(p, ImagePart):
                        if m.role != "user":
                            raise APIError(
                                422,
                                f"messages[{i}]: images are accepted in user messages only",
                                "invalid_request",
                                f"messages.{i}.content.{j}",
                            )
                        if len(images) >= limits.max_images:
                            raise APIError(
                                422,
                                f"more than {limits.max_images} images (limits.max_images)",
                                "too_many_images",
                                "messages",
                            )
                        images.append(
                            decode(p.image_url.url, f"messages[{i}].content[{j}].image_url")
                        )
                        parts.append({"type": "image"})
                    else:
                        parts.append({"type": "text", "text": p.text})
            text = " ".join(p["text"] for p in parts if p["type"] == "text")
            check_question(text, f"messages[{i}].content", allow_empty=True)
            if role == "user":
                user_texts.append(text)
            if m.role == "user":
                last_user = text
            # Models see client text without injected instructions (assistant turns too:
            # the client writes the history it sends).
            for p in parts:
                if p["type"] == "text":
                    p["text"] = (CLIENT_NOTE if note else "") + model_text(p["text"])
            messages.append({"role": role, "content": parts})
        if not any(m.role == "user" for m in body.messages):
            raise APIError(
                422, "messages must contain a user message", "invalid_request", "messages"
            )
        last = next(m for m in reversed(body.messages) if m.role == "user")
        if not last_user.strip() and not any(isinstance(p, ImagePart) for p in last.content or []):
            raise APIError(
                422, "the last user message is empty: ask a question", "empty_question", "messages"
            )
        # The last question first: its domain decision is the report's.
        user_texts = [user_texts[-1], *user_texts[:-1]] if user_texts else []
        if len(images) == 1 and len(messages) == 1:
            # One question about one image: exactly the reasoner contract's prompt (image
            # first), so the answer equals batch inference's and /v1/analyze's.
            return (
                reasoner_contract.messages(model_text(last_user), True),
                images,
                user_texts,
            )
        system = reasoner_contract.SYSTEM_PROMPT if images else reasoner_contract.TEXT_SYSTEM_PROMPT
        messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
        return messages, images, user_texts

    @api.post("/v1/chat/completions", summary="Chat completions (OpenAI-compatible)")
    async def chat(body: ChatCompletionRequest, request: Request):
        """OpenAI-compatible chat: text and ``image_url`` content parts (base64 data URLs),
        ``stream=true`` for SSE chunks ending with ``data: [DONE]``. ``model`` is the base
        model name or a LoRA adapter name (``GET /v1/models``). Each response also carries
        ``safety_report`` (in the last chunk when streaming)."""
        adapter = pick_adapter(body.model)
        messages, images, user_texts = _chat_inputs(body)
        max_new = tokens_for(body.max_completion_tokens or body.max_tokens, "max_tokens")
        params = GenerationParams(
            max_new,
            gen.temperature if body.temperature is None else body.temperature,
            body.top_p or 1.0,
        )
        rid = request.state.request_id
        cid = f"chatcmpl-{rid}"
        created = int(time.time())
        log.info(
            "chat id=%s messages=%d images=%d stream=%s",
            rid,
            len(messages),
            len(images),
            body.stream,
        )
        # The guard sees every user message (and client notes), not only the last.
        unique = list(dict.fromkeys(t for t in user_texts if t.strip())) or [""]
        req_report = merge_requests(
            list(await asyncio.gather(*(backend.check_request(t) for t in unique)))
        )
        if req_report.refused:
            metrics.count("medray_guard_refusals", {"endpoint": "/v1/chat/completions"})
        if body.stream:
            return StreamingResponse(
                _chat_stream(
                    cid, created, body.model, messages, images, params, adapter, req_report
                ),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "x-request-id": rid},
            )
        if req_report.refused:
            text, finish, usage = req_report.refusal, "content_filter", (0, 0)
            report = req_report
        else:
            final = await backend.complete(messages, images, params, adapter)
            text = final.get("text", "")
            finish = final.get("finish_reason", "stop")
            usage = (final.get("prompt_tokens", 0), final.get("completion_tokens", 0))
            report = merge(req_report, await backend.check_answer(text))
        return {
            "id": cid,
            "object": "chat.completion",
            "created": created,
            "model": body.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": usage[0],
                "completion_tokens": usage[1],
                "total_tokens": usage[0] + usage[1],
            },
            "safety_report": report_dict(report),
            "medray_model": None if req_report.refused else final.get("model"),
        }

    async def _chat_stream(cid, created, model, messages, images, params, adapter, req_report):
        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
            data = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "choices": [
                    {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
                ],
                **extra,
            }
            return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

        yield chunk({"role": "assistant", "content": ""})
        if req_report.refused:
            yield chunk({"content": req_report.refusal})
            yield chunk({}, "content_filter", safety_report=report_dict(req_report))
            yield "data: [DONE]\n\n"
            return
        final: dict[str, Any] = {}
        try:
            async for events in backend.reason(messages, images, params, adapter):
                out = []
                for ev in events:
                    if ev["type"] == "token":
                        out.append(chunk({"content": ev["text"]}))
                    elif ev["type"] == "final":
                        final = ev
                if out:
                    yield "".join(out)  # one write per chunk of tokens
            report = merge(req_report, await backend.check_answer(final.get("text", "")))
            usage = {
                "prompt_tokens": final.get("prompt_tokens", 0),
                "completion_tokens": final.get("completion_tokens", 0),
                "total_tokens": final.get("prompt_tokens", 0) + final.get("completion_tokens", 0),
            }
            yield chunk(
                {},
                final.get("finish_reason", "stop"),
                usage=usage,
                safety_report=report_dict(report),
                medray_model=final.get("model"),
            )
        except Exception as e:
            log.error("chat stream %s failed: %s", cid, type(e).__name__)
            err = error_body(
                f"generation failed ({type(e).__name__})", "internal_error", "server_error"
            )
            yield f"data: {json.dumps(err)}\n\n"
        yield "data: [DONE]\n\n"

    app.include_router(public)
    app.include_router(api)
    return app


__all__ = ["APIError", "create_app", "error_body"]
