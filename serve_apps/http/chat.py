"""``POST /v1/chat/completions``: OpenAI-compatible chat with image content parts and
``stream=true``. The server's system prompt cannot be replaced: a client's
``system``/``developer`` message becomes a user-level note (context the model is told not
to obey). The guard checks every user message and every note; domain control judges the
user messages, the requests (a client's "You are a helpful assistant." asks nothing)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse
from PIL import Image

from medray.contracts import reasoner as reasoner_contract
from medray.models.generate import GenerationParams
from medray.safety import merge
from medray.serving import audit
from medray.serving.guard import CLIENT_NOTE, merge_requests, model_text
from serve_apps.http.deps import Context, Ctx, audit_state, report_dict, require_key
from serve_apps.http.errors import APIError, error_body
from serve_apps.schemas import ChatCompletionRequest, ImagePart

log = logging.getLogger("medray.gateway")

router = APIRouter(dependencies=[Depends(require_key)])


def chat_inputs(
    ctx: Context, body: ChatCompletionRequest
) -> tuple[list[dict[str, Any]], list[Image.Image], list[str], list[str]]:
    """The reasoner's messages, the decoded images, the user messages' texts (the last
    question first) and the client notes' texts, all raw for the guard; 4xx for anything
    the client can fix."""
    limits = ctx.limits
    if len(body.messages) > limits.max_messages:
        raise APIError(
            422,
            f"{len(body.messages)} messages, over the limit of {limits.max_messages}",
            "too_many_messages",
            "messages",
        )
    messages: list[dict[str, Any]] = []
    images: list[Image.Image] = []
    prompt_chars = 0
    last_user = ""
    user_texts: list[str] = []  # what the guard checks, raw: every user message ...
    notes: list[str] = []  # ... and every client note (system / developer message)
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
                        ctx.decode(p.image_url.url, f"messages[{i}].content[{j}].image_url")
                    )
                    parts.append({"type": "image"})
                else:
                    parts.append({"type": "text", "text": p.text})
        text = " ".join(p["text"] for p in parts if p["type"] == "text")
        ctx.check_question(text, f"messages[{i}].content", allow_empty=True)
        prompt_chars += len(text)
        ctx.check_prompt(prompt_chars, "messages")
        if note:
            notes.append(text)
        elif role == "user":
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
        raise APIError(422, "messages must contain a user message", "invalid_request", "messages")
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
            notes,
        )
    system = reasoner_contract.SYSTEM_PROMPT if images else reasoner_contract.TEXT_SYSTEM_PROMPT
    messages.insert(0, {"role": "system", "content": [{"type": "text", "text": system}]})
    return messages, images, user_texts, notes


@router.post("/v1/chat/completions", summary="Chat completions (OpenAI-compatible)")
async def chat(body: ChatCompletionRequest, request: Request, ctx: Ctx):
    """OpenAI-compatible chat: text and ``image_url`` content parts (base64 data URLs),
    ``stream=true`` for SSE chunks ending with ``data: [DONE]``. ``model`` is the base
    model name or a LoRA adapter name (``GET /v1/models``). Each response also carries
    ``safety_report`` (in the last chunk when streaming)."""
    backend = ctx.backend
    adapter = ctx.pick_adapter(body.model)
    state = audit_state(request)
    audit.note_model(state, adapter or ctx.args.models.served_name)
    messages, images, user_texts, notes = chat_inputs(ctx, body)
    max_new = ctx.tokens_for(body.max_completion_tokens or body.max_tokens, "max_tokens")
    params = GenerationParams(
        max_new,
        ctx.gen.temperature if body.temperature is None else body.temperature,
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
    async with ctx.deadline("chat"):
        # The guard sees every user message and client note, not only the last question.
        unique = list(dict.fromkeys(t for t in user_texts if t.strip())) or [""]
        checks = [backend.check_request(t) for t in unique]
        checks += [backend.check_request(t, note=True) for t in dict.fromkeys(notes) if t.strip()]
        req_report = merge_requests(list(await asyncio.gather(*checks)))
        audit.note_guard(state, req_report)
        if req_report.refused:
            ctx.metrics.count("medray_guard_refusals", {"endpoint": "/v1/chat/completions"})
        if body.stream:
            events = _chat_stream(
                ctx, cid, created, body.model, messages, images, params, adapter, req_report, state
            )
            return StreamingResponse(
                ctx.guard_stream(events, request, "chat", _error_chunk),
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
            audit.note_guard(state, report)
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


def _error_chunk(err: APIError) -> str:
    """The error chunk (then ``[DONE]``) that ends a stream cut short."""
    body = error_body(err.message, err.code, err.type)
    return f"data: {json.dumps(body)}\n\ndata: [DONE]\n\n"


async def _chat_stream(
    ctx, cid, created, model, messages, images, params, adapter, req_report, state=None
):
    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
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
        # Closed explicitly when this stream is closed (the client left): stops generating.
        async with contextlib.aclosing(
            ctx.backend.reason(messages, images, params, adapter)
        ) as gen:
            async for events in gen:
                out = []
                for ev in events:
                    if ev["type"] == "token":
                        out.append(chunk({"content": ev["text"]}))
                    elif ev["type"] == "final":
                        final = ev
                if out:
                    yield "".join(out)  # one write per chunk of tokens
        report = merge(req_report, await ctx.backend.check_answer(final.get("text", "")))
        audit.note_guard({} if state is None else state, report)
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
        if (unavailable := ctx.unavailable(e)) is not None:
            yield _error_chunk(unavailable)
            return
        log.error("chat stream %s failed: %s", cid, type(e).__name__)
        err = error_body(
            f"generation failed ({type(e).__name__})", "internal_error", "server_error"
        )
        yield f"data: {json.dumps(err)}\n\n"
    yield "data: [DONE]\n\n"
