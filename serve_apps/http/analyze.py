"""``POST /v1/analyze``: one image (and an optional question) analysed as Server-Sent
Events: guard, reasoning, summary, similar cases, knowledge, the agent, safety, done."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from PIL import Image

from medray.agent import AgentInput
from medray.contracts import reasoner as reasoner_contract
from medray.models.generate import GenerationParams
from medray.safety import SafetyReport, merge
from medray.serving import audit
from medray.serving.guard import model_text
from medray.serving.retriever import RetrievalUnavailable
from medray.serving.sse import format_event
from serve_apps.http.deps import Context, Ctx, audit_state, report_dict, require_key, timed
from serve_apps.http.errors import APIError
from serve_apps.schemas import AnalyzeRequest

log = logging.getLogger("medray.gateway")

router = APIRouter(dependencies=[Depends(require_key)])


class _Refused(Exception):
    """The guard refused an analyze request: skip to the safety report."""


@router.post(
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
async def analyze(body: AnalyzeRequest, request: Request, ctx: Ctx):
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
    image = ctx.decode(body.image, "image")
    question = ctx.check_question(body.question, "question", allow_empty=True)
    ctx.check_prompt(len(question), "question")
    adapter = ctx.pick_adapter(body.model)
    state = audit_state(request)
    audit.note_model(state, adapter or ctx.args.models.served_name)
    k = min(body.k, ctx.limits.max_k)
    params = GenerationParams(
        ctx.tokens_for(body.max_new_tokens, "max_new_tokens"),
        ctx.gen.temperature if body.temperature is None else body.temperature,
    )
    rid = request.state.request_id
    log.info("analyze id=%s image=%dx%d question_chars=%d", rid, *image.size, len(question))
    use_agent = body.agent and ctx.args.agent.enabled
    events = _analyze_stream(ctx, rid, image, question, adapter, params, k, use_agent, state)
    return StreamingResponse(
        ctx.guard_stream(events, request, "analyze", _error_event),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", "x-request-id": rid},
    )


async def _analyze_stream(
    ctx: Context, rid, image, question, adapter, params, k, use_agent=False, state=None
) -> AsyncIterator[str]:
    state = {} if state is None else state  # the request's audit fields
    backend, args = ctx.backend, ctx.args
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    reports: list[SafetyReport] = []
    cases_task: asyncio.Task | None = None
    check_task: asyncio.Task | None = None
    try:
        req_report, timings["guard"] = await timed(backend.check_request(question))
        reports.append(req_report)
        audit.note_guard(state, req_report)
        if req_report.refused:
            ctx.metrics.count("medray_guard_refusals", {"endpoint": "/v1/analyze"})
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
            cases_task = asyncio.create_task(_similar_cases(ctx, image, k))
        question = model_text(question)  # the guard reported what was removed
        messages = reasoner_contract.messages(question, True)
        final: dict[str, Any] = {}
        t0 = time.perf_counter()
        # Closed explicitly when this stream is closed (the client left): stops generating.
        async with contextlib.aclosing(backend.reason(messages, [image], params, adapter)) as gen:
            async for chunk in gen:
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
        yield format_event("summary", {"text": summary["summary"], "model": summary.get("model")})
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
            knowledge, timings["knowledge"] = await timed(_knowledge(ctx, query, k))
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
            agent_events = _agent_events(ctx, rid, agent_input, reports)
            async with contextlib.aclosing(agent_events):
                async for name, data in agent_events:
                    yield format_event(name, data)
            timings["agent"] = (time.perf_counter() - t0) * 1000
        answer_report, timings["answer_check"] = await check_task
        reports.append(answer_report)
    except _Refused:
        pass  # only the safety report and done follow a refusal
    except asyncio.CancelledError:
        log.info("analyze id=%s: cancelled (client gone or time limit)", rid)
        raise
    except Exception as e:
        if (err := ctx.unavailable(e)) is not None:
            yield _error_event(err)
        else:
            log.error("analyze id=%s failed: %s", rid, type(e).__name__)
            yield format_event(
                "error", {"message": f"analysis failed ({type(e).__name__}); request id {rid}"}
            )
    finally:
        for task in (cases_task, check_task):
            if task is not None and not task.done():
                task.cancel()
    final_report = merge(*reports) if reports else SafetyReport()
    if reports:
        audit.note_guard(state, final_report)
    yield format_event("safety", report_dict(final_report))
    total = (time.perf_counter() - t_start) * 1000
    yield format_event(
        "done",
        {
            "request_id": rid,
            "timings_ms": {k2: round(v, 1) for k2, v in timings.items()},
            "inference_time_ms": round(total, 1),
        },
    )


def _error_event(err: APIError) -> str:
    """The ``error`` event that ends a stream cut short (time limit, overload)."""
    return format_event("error", {"message": err.message, "code": err.code})


async def _agent_events(ctx: Context, rid, agent_input, reports: list[SafetyReport]):
    """The agent's events; a failing agent is an ``error`` event, not a failed stream."""
    try:
        events = ctx.backend.agent_events(agent_input)
        async with contextlib.aclosing(events):
            async for name, data in events:
                if name == "agent_answer":
                    text = "\n".join(
                        [
                            *data["findings"],
                            data["most_likely_diagnosis"] or "",
                            *data["next_steps"],
                        ]
                    )
                    reports.append(await ctx.backend.check_answer(text))
                yield name, data
    except asyncio.CancelledError:
        raise
    except Exception as e:
        log.error("analyze id=%s: agent failed: %s", rid, type(e).__name__)
        yield "error", {"message": f"the agent failed ({type(e).__name__}); request id {rid}"}


async def _similar_cases(ctx: Context, image: Image.Image, k: int) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    try:
        vec = await ctx.backend.clip_image(image)
        hits = await ctx.backend.similar_cases(vec, "image", k, None)
        out: dict[str, Any] = {"hits": hits}
    except RetrievalUnavailable as e:
        ctx.metrics.count("medray_retrieval_failures", {"what": "similar_cases"})
        out = {"hits": [], "error": str(e)}
    return out, (time.perf_counter() - t0) * 1000


async def _knowledge(ctx: Context, query: str, k: int) -> dict[str, Any]:
    try:
        vec = await ctx.backend.text_vector(query)
        return {"hits": await ctx.backend.knowledge(query, vec, k)}
    except RetrievalUnavailable as e:
        ctx.metrics.count("medray_retrieval_failures", {"what": "knowledge"})
        return {"hits": [], "error": str(e)}
