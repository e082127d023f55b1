"""Middleware of the HTTP API: the request-body limit (a 413 before the app reads an
oversized body), the request log (request id, method, path, status, size, time;
never request or answer text) and the audit log (:mod:`medray.serving.audit`: one JSON
line per request in a file of its own)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request

from medray.serving.audit import AuditLog, build_record
from serve_apps.http.errors import error_body

log = logging.getLogger("medray.gateway")


class NullMetrics:
    """Metrics sink that drops everything (the Serve app plugs in Ray's metrics)."""

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        pass

    def count(self, name: str, tags: Mapping[str, str]) -> None:
        pass


class _BodyTooLarge(Exception):
    pass


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


class AuditMiddleware:
    """Write one :class:`medray.serving.audit.AuditRecord` per HTTP request to ``audit``
    once its response has been sent (the end of a stream included; 500 if the app
    raised). Routers note key id, model and guard decision in the scope's ``state``."""

    def __init__(self, app, audit: AuditLog) -> None:
        self.app = app
        self.audit = audit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        state = scope.setdefault("state", {})
        t0 = time.perf_counter()
        status = 500

        async def recording_send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            record = build_record(
                state,
                method=scope.get("method", "-"),
                endpoint=scope.get("path", "-"),
                status=status,
                latency_ms=(time.perf_counter() - t0) * 1000,
            )
            try:
                self.audit.write(record)
            except OSError as e:  # the audit file is gone or the disk full: say so, answer
                log.error("audit log %s: write failed (%s)", self.audit.path, type(e).__name__)


def install_request_log(app: FastAPI, metrics: Any) -> None:
    """Give every request an id (``x-request-id``, the client's or a new one), log it with
    its status, size and time, and report it to ``metrics``."""

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


__all__ = ["AuditMiddleware", "BodyLimitMiddleware", "NullMetrics", "install_request_log"]
