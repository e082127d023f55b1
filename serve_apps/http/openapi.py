"""The OpenAPI document states what the API really does (issue 18.6).

FastAPI's generated document knows the pydantic models only; this adds what the app
enforces beyond them, from the app's own settings, so that a client (or a fuzzer
generating requests from the document) sees the real contract:

- the error shape (:func:`serve_apps.http.errors.error_body`) for every 4xx and 5xx the
  app answers, instead of FastAPI's ``HTTPValidationError`` for 422;
- the bearer key (a security scheme on every authenticated operation, and its 401);
- the limits of ``limits`` and ``generation`` (question length, new tokens, messages);
- the model and adapter names the app serves (``enum``, from the config);
- image fields: base64 or a base64 ``data:`` URL of an accepted format
  (:data:`IMAGE_FORMAT`, a custom string format; the pixel limits in the description);
- ``/v1/search``: exactly one of ``text`` and ``image``, and the filterable fields;
- chat messages by role: images only in ``user`` messages, at least one ``user`` message;
- the streamed media type of ``/v1/analyze`` and of a chat with ``stream: true``.

What no JSON schema can say (the total prompt size ``limits.max_prompt_chars``, a non-empty
last user message, ``limits.max_images`` over a whole chat, whether the bytes decode) is in
the descriptions, and its 4xx is documented.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from medray.retrieval.store import CASE_FILTERS
from medray.serving.images import MIN_SIDE, accepted_formats
from serve_apps.schemas import GenerateRequest
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


# The string format of an image field (base64 or a base64 data: URL of an accepted
# format): a client, or a fuzzer's strategy for it, knows the field holds image bytes.
IMAGE_FORMAT = "medray-image"
IMAGE_PATTERN = r"^(data:[A-Za-z0-9.+-]+/[A-Za-z0-9.+-]+;base64,)?[A-Za-z0-9+/]+={0,2}$"
NOT_BLANK = r"\S"  # a question or search text must not be empty once stripped


def _image(args: AppArgs) -> dict[str, Any]:
    lim = args.limits
    return {
        "format": IMAGE_FORMAT,
        "pattern": IMAGE_PATTERN,
        "maxLength": lim.max_body_bytes,
        "description": f"The image: {accepted_formats()}, as base64 or a base64 data: URL "
        f"(data:image/png;base64,...). At most {lim.max_image_pixels} pixels, the larger side "
        f"at least {MIN_SIDE}; larger sides are fitted to {lim.max_image_side}, 16-bit and "
        "unusual modes and extreme aspect ratios converted as preprocessing converts them. "
        "Another format is a 415, too many pixels a 413, undecodable bytes a 422.",
    }


def _limits(args: AppArgs) -> dict[str, dict[str, dict[str, Any]]]:
    """Schema name -> field -> JSON-schema keywords the app enforces beyond the model."""
    lim, gen = args.limits, args.generation
    question = {"maxLength": lim.max_question_chars}
    asked = {**question, "pattern": NOT_BLANK}
    tokens = {"maximum": gen.max_new_tokens_limit}
    reasoner = {"enum": args.model_names()}
    default_length = GenerateRequest.model_fields["max_length"].default  # capped: generate.py
    return {
        "GenerateRequest": {
            "question": asked,
            "max_length": {**tokens, "default": min(default_length, gen.max_new_tokens_limit)},
            "model": {"enum": args.qa_model_names()},
        },
        "AnalyzeRequest": {
            "image": _image(args),
            "question": question,
            "max_new_tokens": tokens,
            "model": reasoner,
        },
        "SearchRequest": {"text": asked, "image": _image(args)},
        "ChatCompletionRequest": {
            "model": reasoner,
            "messages": {"maxItems": lim.max_messages},
            "max_tokens": tokens,
            "max_completion_tokens": tokens,
        },
        "TextPart": {"text": question},
        "ImageURL": {"url": _image(args)},
    }


def _constrain(prop: dict[str, Any], extra: dict[str, Any]) -> None:
    """Add ``extra`` to the non-null branch of a property (``anyOf: [T, null]``)."""
    for branch in prop.get("anyOf", [prop]):
        if branch.get("type") != "null":
            branch.update(extra)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _search(schema: dict[str, Any]) -> None:
    """``/v1/search``: exactly one of ``text`` and ``image``; the filterable fields."""
    schema["oneOf"] = [
        {"required": [a], "properties": {a: {"type": "string"}, b: {"type": "null"}}}
        for a, b in (("text", "image"), ("image", "text"))
    ]
    values = {
        "anyOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}},
        ]
    }
    filters = {
        "type": "object",
        "properties": {name: values for name in CASE_FILTERS},
        "additionalProperties": False,
    }
    prop = schema["properties"]["filters"]
    prop["anyOf"] = [filters, {"type": "null"}]
    prop["description"] += f" Filterable fields: {', '.join(CASE_FILTERS)}; others are a 422."


def _messages(schemas: dict[str, Any], args: AppArgs) -> None:
    """Chat messages by role: a ``user`` message may hold text and image parts, any other
    role text only; a chat needs a ``user`` message. ``ChatMessage`` becomes their union."""
    lim = args.limits
    text = {"type": "string", "maxLength": lim.max_question_chars}
    parts = {
        "oneOf": [_ref("TextPart"), _ref("ImagePart")],
        "discriminator": {
            "propertyName": "type",
            "mapping": {
                "text": "#/components/schemas/TextPart",
                "image_url": "#/components/schemas/ImagePart",
            },
        },
    }

    def message(roles: list[str], items: dict[str, Any], about: str) -> dict[str, Any]:
        user = roles == ["user"]
        role = {"const": "user"} if user else {"enum": roles}
        # A question needs content; history and notes may be empty.
        content = [
            {**text, "pattern": NOT_BLANK} if user else text,
            {"type": "array", "items": items, "minItems": 1 if user else 0},
        ]
        return {
            "type": "object",
            "required": ["role", "content"] if user else ["role"],
            "properties": {
                "role": {"type": "string", **role},
                "content": {"anyOf": content if user else [*content, {"type": "null"}]},
            },
            "additionalProperties": True,
            "description": about,
        }

    schemas["UserMessage"] = message(
        ["user"],
        parts,
        f"A user message: text and images (at most {lim.max_images} in a chat). The last "
        "one must hold a question or an image.",
    )
    schemas["ContextMessage"] = message(
        ["system", "developer", "assistant"],
        _ref("TextPart"),
        "Text only. A system or developer message does not replace the server's system "
        "prompt: it is kept as a user-level note and checked like a user message.",
    )
    schemas["ChatMessage"] = {"oneOf": [_ref("UserMessage"), _ref("ContextMessage")]}
    prop = schemas["ChatCompletionRequest"]["properties"]["messages"]
    prop["contains"] = {"type": "object", "properties": {"role": {"const": "user"}}}
    prop["description"] = (
        f"At most {lim.max_messages} messages, {lim.max_question_chars} characters each and "
        f"{lim.max_prompt_chars} in all (limits.max_prompt_chars: a 422 over it)."
    )


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
    if "SearchRequest" in schemas:
        _search(schemas["SearchRequest"])
    if "ChatCompletionRequest" in schemas:
        _messages(schemas, args)
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
