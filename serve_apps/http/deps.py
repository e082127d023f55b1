"""What every router needs, built once per app: :class:`Context` holds the backend, the
settings and the metrics sink, and checks the parts of a request that several endpoints
share (API key, question length, images, model/adapter name, token count). Routers read
it with the :func:`context` dependency; :func:`require_key` guards the authenticated ones.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import Depends, Request
from PIL import Image

from medray.safety import SafetyReport
from medray.serving.images import ImageError, decode_base64, http_status, open_image
from serve_apps.backend import Backend
from serve_apps.http.errors import APIError
from serve_apps.settings import AppArgs


class Context:
    """The app's backend, settings and metrics, and the request checks built on them.

    Raises:
        ValueError: API keys are required (``args.auth``) but none are configured.
    """

    def __init__(self, backend: Backend, args: AppArgs, metrics: Any) -> None:
        self.backend = backend
        self.args = args
        self.metrics = metrics
        self.limits = args.limits
        self.gen = args.generation
        self.keys = args.auth.keys()
        self.keys_required = args.auth.required()
        if self.keys_required and not self.keys:
            raise ValueError(
                f"API keys are required (the app listens on {args.auth.listen_host!r}, "
                f"auth.require={args.auth.require!r}) but none are configured: set "
                f"{args.auth.api_keys_env} or auth.api_keys"
            )

    def check_key(self, request: Request) -> None:
        """Raise a 401 unless the request carries an accepted key (when keys are required)."""
        if not self.keys_required:
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
        if not any(hmac.compare_digest(token.strip().encode(), k.encode()) for k in self.keys):
            raise APIError(401, "invalid API key", "invalid_api_key", type="authentication_error")

    def check_question(self, text: str, field: str, *, allow_empty: bool) -> str:
        """The stripped question; 422 if empty (unless allowed) or over the length limit."""
        q = text.strip()
        if not q and not allow_empty:
            raise APIError(422, f"{field} is empty: ask a question", "empty_question", field)
        if len(q) > self.limits.max_question_chars:
            raise APIError(
                422,
                f"{field} has {len(q)} characters, over the limit of "
                f"{self.limits.max_question_chars} (limits.max_question_chars)",
                "question_too_long",
                field,
            )
        return q

    def decode(self, data: str, field: str) -> Image.Image:
        """The image of a base64 field, checked; a 4xx naming the problem otherwise."""
        try:
            raw = decode_base64(data, field)
            img = open_image(raw, self.limits.max_image_pixels, self.limits.max_image_side, field)
        except ImageError as e:
            raise APIError(http_status(e), str(e), e.code, field) from None
        return img

    def pick_adapter(self, model: str | None, field: str = "model") -> str | None:
        """The LoRA adapter a reasoner ``model`` names (None: the base model); 404 if unknown."""
        if model is None or model == self.args.models.served_name:
            return None
        if model in self.args.adapters:
            return model
        raise APIError(
            404,
            f"the model {model!r} does not exist; available models: "
            f"{', '.join(self.args.model_names())}",
            "model_not_found",
            field,
        )

    def tokens_for(self, requested: int | None, field: str) -> int:
        """The new-token count of a request (default from the config); 422 over the limit."""
        n = requested if requested is not None else self.gen.max_new_tokens
        if n > self.gen.max_new_tokens_limit:
            raise APIError(
                422,
                f"{field} is {n}, over the limit of {self.gen.max_new_tokens_limit}",
                "too_many_tokens",
                field,
            )
        return n


def report_dict(report: SafetyReport) -> dict[str, Any]:
    """A safety report as the API sends it."""
    return report.to_dict()


async def timed(coro: Awaitable[Any]) -> tuple[Any, float]:
    """``coro``'s result and how long it took in milliseconds."""
    t0 = time.perf_counter()
    out = await coro
    return out, (time.perf_counter() - t0) * 1000


def context(request: Request) -> Context:
    """FastAPI dependency: the app's :class:`Context`."""
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]
"""A route parameter ``ctx: Ctx`` receives the app's :class:`Context`."""


async def require_key(request: Request) -> None:
    """FastAPI dependency of the authenticated routers: a 401 without an accepted key."""
    context(request).check_key(request)


__all__ = ["Context", "Ctx", "context", "report_dict", "require_key", "timed"]
