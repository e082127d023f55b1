"""What every router needs, built once per app: :class:`Context` holds the backend, the
settings and the metrics sink, and checks the parts of a request that several endpoints
share (API key, rate limit, question and prompt length, images, model/adapter name,
token count, time limits). Routers read it with the :func:`context` dependency;
:func:`require_key` guards the authenticated ones (key, then rate limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from PIL import Image

from medray.safety import SafetyReport
from medray.serving import audit
from medray.serving.images import ImageError, decode_base64, http_status, open_image
from medray.serving.ratelimit import RateLimiter, key_id, retry_after
from medray.serving.settings import is_loopback, loopback_host_header
from serve_apps.backend import Backend
from serve_apps.http.errors import APIError, overloaded
from serve_apps.settings import AppArgs

log = logging.getLogger("medray.gateway")


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
        self.auth = args.auth
        self.keys = args.auth.keys()
        if args.auth.required() and not self.keys:
            raise ValueError(
                f"API keys are required (the app listens on {args.auth.listen_host!r}, "
                f"auth.require={args.auth.require!r}) but none are configured: set the "
                f"environment variable {args.auth.api_keys_env or 'MEDRAY_API_KEYS'} of the "
                "cluster or a key file (auth.api_keys_file)"
            )
        rl = args.rate_limit
        self.limiter = RateLimiter(rl.per_second, rl.burst, rl.max_clients) if rl.enabled else None

    def check_key(self, request: Request) -> tuple[str, bool]:
        """The client's id and whether it is a key's: the key's hash (:func:`key_id`), or
        the client's address when the request needs no key.

        Whether it needs one follows the address the request really came in on (the ASGI
        scope's ``server``, :meth:`AuthSettings.required_for`), not only the declared
        ``auth.listen_host``. A request trusted because it came in on loopback must name
        the loopback in its ``Host`` (421 otherwise: DNS rebinding). Raises a 401 unless
        the request carries an accepted key (when one is needed), a 403 when one is needed
        but the app has none.
        """
        server = request.scope.get("server")
        local = str(server[0]) if server else None
        if not self.auth.required_for(local):
            if local is not None and is_loopback(local):
                self.check_host(request)
            return f"addr-{request.client.host if request.client else '-'}", False
        if not self.keys:
            raise APIError(
                403,
                f"this request came in on {local or 'an unknown address'}, beyond loopback, "
                "where an API key is required, but the app has none (auth.listen_host="
                f"{self.auth.listen_host!r} declares loopback only): set "
                f"{self.auth.api_keys_env or 'MEDRAY_API_KEYS'} or auth.api_keys_file in the "
                "cluster, or bind Serve to 127.0.0.1 (http_options.host)",
                "api_keys_not_configured",
                type="authentication_error",
            )
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
        return key_id(token.strip()), True

    def check_host(self, request: Request) -> None:
        """A 421 unless the ``Host`` header names the loopback (:func:`loopback_host_header`):
        a page that rebinds its own domain to 127.0.0.1 gets no answer from an app that
        trusts loopback without keys."""
        host = request.headers.get("host", "")
        if not loopback_host_header(host):
            raise APIError(
                421,
                f"Host {host[:100]!r} is not a loopback name: without an API key this app "
                "answers only requests addressed to localhost, 127.0.0.1 or [::1] (any port; "
                "a guard against DNS rebinding); open it as http://127.0.0.1:<port>, or "
                "require keys (auth.require: always) to reach it under another name",
                "untrusted_host",
                type="invalid_request_error",
            )

    def check_rate(self, client: str, endpoint: str) -> None:
        """A 429 with ``Retry-After`` when ``client`` is over its rate (``rate_limit``)."""
        if self.limiter is None:
            return
        rl = self.args.rate_limit
        cost = rl.analyze_cost if endpoint == "/v1/analyze" else 1.0
        wait = self.limiter.acquire(client, cost)
        if wait > 0:
            self.metrics.count("medray_rate_limited", {"endpoint": endpoint})
            raise APIError(
                429,
                f"rate limit exceeded: at most {rl.per_second:g} requests per second on "
                f"average and {rl.burst:g} at once per client (rate_limit in the app config; "
                f"{endpoint} costs {cost:g}); retry after {retry_after(wait)} s",
                "rate_limit_exceeded",
                type="rate_limit_error",
                headers={"Retry-After": retry_after(wait)},
            )

    def check_prompt(self, chars: int, field: str) -> None:
        """A 422 when a request's text together is over ``limits.max_prompt_chars``."""
        if chars > self.limits.max_prompt_chars:
            raise APIError(
                422,
                f"{field}: {chars} characters in all, over the limit of "
                f"{self.limits.max_prompt_chars} (limits.max_prompt_chars)",
                "prompt_too_long",
                field,
            )

    def unavailable(self, exc: BaseException) -> APIError | None:
        """The 503 (with ``Retry-After``) for a deployment that cannot take the request
        now (its queue is full or it has no replica); None for any other error."""
        if not overloaded(exc):
            return None
        self.metrics.count("medray_overloaded", {"what": type(exc).__name__})
        after = retry_after(self.args.timeouts.retry_after_s)
        return APIError(
            503,
            f"the service is overloaded (a model's queue is full); retry after {after} s",
            "overloaded",
            type="server_error",
            headers={"Retry-After": after},
        )

    def timeout_error(self, endpoint: str) -> APIError:
        """The 504 of an ``endpoint`` (``analyze``, ``chat``, ...) past its time limit."""
        seconds = getattr(self.args.timeouts, f"{endpoint}_s")
        return APIError(
            504,
            f"the request took longer than the {endpoint} time limit of {seconds:g} s "
            f"(timeouts.{endpoint}_s); retry later or ask for fewer tokens",
            "timeout",
            type="server_error",
        )

    @contextlib.asynccontextmanager
    async def deadline(self, endpoint: str) -> AsyncIterator[None]:
        """Bound the block by ``timeouts.<endpoint>_s`` (504 past it) and turn a full
        deployment queue into a 503 with ``Retry-After``."""
        try:
            async with asyncio.timeout(getattr(self.args.timeouts, f"{endpoint}_s")):
                yield
        except TimeoutError:
            self.metrics.count("medray_timeouts", {"endpoint": endpoint})
            raise self.timeout_error(endpoint) from None
        except Exception as e:
            if (err := self.unavailable(e)) is not None:
                raise err from None
            raise

    async def guard_stream(
        self,
        events: AsyncIterator[str],
        request: Request,
        endpoint: str,
        on_error: Callable[[APIError], str],
    ) -> AsyncIterator[str]:
        """Re-yield a response stream within ``timeouts.<endpoint>_s``: past it, or when
        a deployment is overloaded, send ``on_error(error)`` and end. A client that goes
        away stops the stream: ``events`` is closed, which stops its generation."""
        loop = asyncio.get_running_loop()
        end = loop.time() + getattr(self.args.timeouts, f"{endpoint}_s")
        rid = getattr(request.state, "request_id", "-")
        try:
            while True:
                if await request.is_disconnected():
                    log.info("%s id=%s: client disconnected, generation stopped", endpoint, rid)
                    return
                try:
                    item = await asyncio.wait_for(anext(events), max(0.0, end - loop.time()))
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self.metrics.count("medray_timeouts", {"endpoint": endpoint})
                    yield on_error(self.timeout_error(endpoint))
                    return
                except Exception as e:
                    if (err := self.unavailable(e)) is None:
                        raise
                    yield on_error(err)
                    return
                yield item
        finally:
            await events.aclose()

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
        """The LoRA adapter a reasoner ``model`` names (None: the base model); 404 if unknown.

        No ``model``: the config's ``default_adapter`` (or the base model)."""
        if model is None:
            return self.args.default_adapter or None
        if model == self.args.models.served_name:
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


def audit_state(request: Request) -> dict[str, Any]:
    """The request's state mapping, where routers note what the audit log records
    (:func:`medray.serving.audit.note_guard`, ``note_model``)."""
    return request.scope.setdefault("state", {})


def context(request: Request) -> Context:
    """FastAPI dependency: the app's :class:`Context`."""
    return request.app.state.ctx


Ctx = Annotated[Context, Depends(context)]
"""A route parameter ``ctx: Ctx`` receives the app's :class:`Context`."""


async def require_key(request: Request) -> None:
    """FastAPI dependency of the authenticated routers: a 401 without an accepted key,
    then a 429 over the client's rate limit. Sets ``request.state.client_id``."""
    ctx = context(request)
    client, keyed = ctx.check_key(request)
    request.state.client_id = client
    if keyed:
        audit.note_key(audit_state(request), client)
    ctx.check_rate(client, request.url.path)


__all__ = ["Context", "Ctx", "audit_state", "context", "report_dict", "require_key", "timed"]
