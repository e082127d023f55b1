"""``POST /v1/search``: similar cases, text->image or image->text."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from medray.safety import SafetyReport
from medray.serving import audit
from medray.serving.retriever import RetrievalUnavailable
from serve_apps.http.deps import Context, Ctx, audit_state, report_dict, require_key
from serve_apps.http.errors import APIError
from serve_apps.schemas import SearchRequest

router = APIRouter(dependencies=[Depends(require_key)])


@router.post("/v1/search", summary="Similar cases: text->image or image->text")
async def search(body: SearchRequest, request: Request, ctx: Ctx) -> dict[str, Any]:
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
    async with ctx.deadline("search"):
        return await _search(ctx, body, audit_state(request))


async def _search(ctx: Context, body: SearchRequest, state) -> dict[str, Any]:
    backend = ctx.backend
    k = min(body.k, ctx.limits.max_k)
    report = SafetyReport()
    if body.text is not None:
        text = ctx.check_question(body.text, "text", allow_empty=False)
        ctx.check_prompt(len(text), "text")
        report = await backend.check_request(text)
        audit.note_guard(state, report)
        if report.refused:
            ctx.metrics.count("medray_guard_refusals", {"endpoint": "/v1/search"})
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
        image = ctx.decode(body.image, "image")
        audit.note_guard_skipped(state, "image_only")
        mode, vec = "image_to_text", await backend.clip_image(image)
        field = "text"
    if not ctx.args.retrieval.enabled:
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
        ctx.metrics.count("medray_retrieval_failures", {"what": "search"})
        return {
            "mode": mode,
            "available": False,
            "hits": [],
            "error": msg,
            "safety_report": report_dict(report),
        }
    return {"mode": mode, "available": True, "hits": hits, "safety_report": report_dict(report)}
