"""``POST /generate``: text medical QA (the prior art's contract)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Depends, Request

from medray.models.generate import GenerationParams
from medray.safety import SafetyReport, merge
from medray.serving import audit
from medray.serving.guard import model_text
from serve_apps.http.deps import Context, Ctx, audit_state, report_dict, require_key
from serve_apps.http.errors import APIError
from serve_apps.schemas import GenerateRequest

router = APIRouter(dependencies=[Depends(require_key)])


@router.post(
    "/generate", summary="Text medical QA: {question, temperature, max_length, use_safety}"
)
async def generate(body: GenerateRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
    """Answer a text question with the medical-QA model (``body.model``: one of
    ``args.qa_model_names()``, default the configured one). Returns ``{response,
    model, safety_report, inference_time_ms}``; ``model`` says which weights answered."""
    args = ctx.args
    question = ctx.check_question(body.question, "question", allow_empty=False)
    ctx.check_prompt(len(question), "question")
    if body.model is not None and body.model not in args.qa_model_names():
        raise APIError(
            404,
            f"the model {body.model!r} does not answer /generate; text QA models: "
            f"{', '.join(args.qa_model_names())}",
            "model_not_found",
            "model",
            "invalid_request_error",
        )
    # Not sent: the contract's 100, or the configured limit if that is lower (the default
    # must not be a 422 under a config with a lower limit).
    requested = body.max_length
    if "max_length" not in body.model_fields_set:
        requested = min(requested, args.generation.max_new_tokens_limit)
    max_new = ctx.tokens_for(requested, "max_length")
    state = audit_state(request)
    audit.note_model(state, body.model or args.models.medqa_name)
    async with ctx.deadline("generate"):
        return await _answer(ctx, body, question, max_new, state)


async def _answer(ctx: Context, body: GenerateRequest, question: str, max_new: int, state):
    backend = ctx.backend
    if body.use_safety:
        req_report = await backend.check_request(question)
        audit.note_guard(state, req_report)
        if req_report.refused:
            ctx.metrics.count("medray_guard_refusals", {"endpoint": "/generate"})
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
        audit.note_guard(state, report)
    else:
        audit.note_guard_skipped(state, "safety_disabled")
        report = SafetyReport(
            warnings=("safety checks were disabled for this request (use_safety=false)",)
        )
    return {
        "response": text,
        "model": answer.get("model"),
        "safety_report": report_dict(report),
        "inference_time_ms": round(ms, 1),
    }
