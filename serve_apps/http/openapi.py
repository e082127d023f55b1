"""The OpenAPI document states what the API really does (issue 18.6).

FastAPI's generated document knows the pydantic models only; this adds what the app
enforces beyond them, from the app's own settings, so that a client (or a fuzzer
generating requests from the document) sees the real contract:

- the error shape (:func:`serve_apps.http.errors.error_body`) for every 4xx and 5xx the
  app answers, instead of FastAPI's ``HTTPValidationError`` for 422;
- the bearer key (a security scheme on every authenticated operation, and its 401);
- the limits of ``limits`` and ``generation`` (question length, new tokens, messages);
- the streamed media type of ``/v1/analyze`` and of a chat with ``stream: true``.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from serve_apps.settings import AppArgs

PUBLIC = ("/health", "/ready")
ERROR_SCHEMA = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "code"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "code": {"type": "string"},
                "param": {"type": ["string", "null"]},
            },
        }
    },
}
# Statuses every operation with a body may answer (besides 200), and why.
BODY_ERRORS = {
    "404": "The model or adapter named in the request does not exist (GET /v1/models).",
    "413": "The body or an image is too large.",
    "415": "The image format is not accepted (PNG, JPEG, DICOM).",
    "422": "The request is invalid (the message names the field and the limit).",
}
KEYED_ERRORS = {
    "401": "Missing or invalid API key (`Authorization: Bearer <key>`).",
    "429": "Rate limit exceeded; `Retry-After` says when to retry.",
    "503": "Overloaded or a model is unavailable; `Retry-After` says when to retry.",
    "504": "The endpoint's time limit (`timeouts`) ran out.",
}
STREAMED = {"/v1/analyze": ("text/event-stream",)}
BOTH = {"/v1/chat/completions": ("application/json", "text/event-stream")}


def _limits(args: AppArgs) -> dict[str, dict[str, dict[str, Any]]]:
    """Schema name -> field -> JSON-schema keywords the app enforces beyond the model."""
    lim, gen = args.limits, args.generation
    question = {"maxLength": lim.max_question_chars}
    tokens = {"maximum": gen.max_new_tokens_limit}
    return {
        "GenerateRequest": {"question": question, "max_length": tokens},
        "AnalyzeRequest": {"question": question, "max_new_tokens": tokens},
        "ChatCompletionRequest": {
            "messages": {"maxItems": lim.max_messages},
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
        },
    }


def _constrain(prop: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add ``extra`` to the non-null branch of a property (``anyOf: [T, null]``)."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            branch.update(extra)


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def describe(doc: dict[str, Any], args: AppArgs) -> dict[str, Any]:
    """``doc`` (FastAPI's document of the app) with the real contract added, in place."""
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    schemas["Error"] = ERROR_SCHEMA
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    for name, fields in _limits(args).items():
        props = schemas.get(name, {}).get("properties", {})
        for field, extra in fields.items():
            if field in props:
                _constrain(props[field], extra)
    doc["components"]["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "An API key."}
    }
    for path, ops in doc.get("paths", {}).items():
        for op in ops.values():
            responses = op.setdefault("responses", {})
            errors = dict(BODY_ERRORS) if "requestBody" in op else {}
            if path not in PUBLIC:
                errors.update(KEYED_ERRORS)
                op["security"] = [{"bearer": []}]
            for status, text in errors.items():
                responses[status] = _error(text)
            media = STREAMED.get(path) or BOTH.get(path)
            if media:
                ok = responses.setdefault("200", {"description": "OK"})
                ok["content"] = {m: {} for m in media}
    return doc


def install(app: FastAPI, args: AppArgs) -> None:
    """Serve :func:`describe`'s document as the app's ``/openapi.json``."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = describe(FastAPI.openapi(app), args)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
