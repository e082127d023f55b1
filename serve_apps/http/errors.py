"""The API's error shape (OpenAI's ``{"error": {message, type, code, param}}``) and the
exception handlers that turn every failure into it."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger("medray.gateway")


class APIError(Exception):
    """An error the client gets as JSON with a status code.

    Args:
        status: HTTP status.
        message: what is wrong and how to fix it.
        code: machine-readable code.
        param: the request field at fault, if any.
        type: OpenAI-style error type.
        headers: extra response headers (``Retry-After`` of a 429 or 503).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.headers = headers
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


def validation_message(exc: RequestValidationError) -> tuple[str, str | None]:
    """One readable sentence for pydantic's errors, and the first field at fault."""
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


def overloaded(exc: BaseException) -> bool:
    """Whether ``exc`` (or the cause it wraps) says a Serve deployment cannot take the
    request now: its queue is full (``BackPressureError``, ``max_queued_requests``), it
    has no running replica (``DeploymentUnavailableError``) or the replica died under the
    call and its retry (``RayActorError``: Serve is replacing it)."""
    try:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    cause = getattr(exc, "cause", None)
    kinds = (BackPressureError, DeploymentUnavailableError, RayActorError)
    return isinstance(exc, kinds) or isinstance(cause, kinds)


async def _api_error(request: Request, exc: APIError):
    return JSONResponse(
        error_body(exc.message, exc.code, exc.type, exc.param),
        status_code=exc.status,
        headers=exc.headers,
    )


async def _validation(request: Request, exc: RequestValidationError):
    message, param = validation_message(exc)
    return JSONResponse(
        error_body(message, "invalid_request", "invalid_request_error", param), status_code=422
    )


async def _http(request: Request, exc: StarletteHTTPException):
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        error_body(str(exc.detail), code, "invalid_request_error"),
        status_code=exc.status_code,
    )


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


def install_handlers(app: FastAPI) -> None:
    """Answer every error of ``app`` in the API's JSON shape."""
    app.add_exception_handler(APIError, _api_error)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(Exception, _unexpected)


__all__ = ["APIError", "error_body", "install_handlers", "overloaded", "validation_message"]
