"""The web UI's HTTP client: the gateway's own endpoints, called like any API client.

The UI holds no second copy of the analyze flow: it sends the user's request to
``/v1/analyze`` (with the user's API key as the ``Authorization`` header) and reads the
stream with :func:`medray.serving.sse.read_events`, the reader every client shares.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import httpx

from medray.serving.sse import read_events

REASONER_ENDPOINT = "/v1/chat/completions"  # /v1/models marks the reasoner's models so


class ApiError(Exception):
    """The API answered with an error: ``str(e)`` is the API's own message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_message(resp: httpx.Response) -> str:
    """The API's JSON error message (``{"error": {"message"}}``), else the status line."""
    try:
        body = resp.json()
        msg = body["error"]["message"]
        if isinstance(msg, str) and msg:
            return msg
    except Exception:  # not the API's error shape: say what came back, never a trace
        pass
    return f"HTTP {resp.status_code} {resp.reason_phrase}".strip()


class ApiClient:
    """Calls ``base_url`` (the gateway itself) with the user's API key, if any."""

    def __init__(self, base_url: str, api_key: str = "", timeout_s: float = 300.0) -> None:
        self.base_url = base_url.rstrip("/")
        key = (api_key or "").strip()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = httpx.Timeout(timeout_s, connect=10.0)

    def _client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, headers=self.headers, timeout=self.timeout)

    def models(self) -> list[str]:
        """The models ``/v1/analyze`` takes: the base reasoner and its served adapters."""
        with self._client() as c:
            r = c.get("/v1/models")
        if r.status_code != 200:
            raise ApiError(r.status_code, error_message(r))
        return [m["id"] for m in r.json()["data"] if m.get("endpoint") == REASONER_ENDPOINT]

    def analyze(
        self, image: bytes, question: str, model: str | None = None, **extra: Any
    ) -> Iterator[tuple[str, Any]]:
        """``(event, data)`` for each event of ``/v1/analyze`` as it arrives.

        Raises:
            ApiError: the request was refused before the stream started (4xx/5xx).
        """
        payload: dict[str, Any] = {
            "image": base64.b64encode(image).decode(),
            "question": question,
            **extra,
        }
        if model:
            payload["model"] = model
        with self._client() as c, c.stream("POST", "/v1/analyze", json=payload) as r:
            if r.status_code != 200:
                r.read()
                raise ApiError(r.status_code, error_message(r))
            yield from read_events(r.iter_lines())

    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        k: int = 5,
        filters: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """``POST /v1/search``: text -> images (``text``) or image -> reports (``image``).

        Raises:
            ApiError: the API refused the request (its message).
        """
        payload: dict[str, Any] = {"k": k}
        if text is not None:
            payload["text"] = text
        if image is not None:
            payload["image"] = base64.b64encode(image).decode()
        if filters:
            payload["filters"] = filters
        with self._client() as c:
            r = c.post("/v1/search", json=payload)
        if r.status_code != 200:
            raise ApiError(r.status_code, error_message(r))
        return r.json()
