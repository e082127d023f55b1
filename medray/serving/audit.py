"""The audit log: one JSON line per API request, in a file of its own (not the logger).

A record says who asked what kind of thing and what came of it, never what was asked or
answered: time, request id, key id (:func:`medray.serving.ratelimit.key_id`, a short
hash of the API key; ``anonymous`` when no keys are required), endpoint, method,
model/adapter, the guard's decision (``allowed`` / ``refused`` / ``not_checked`` and a
reason code), risk level, status and latency. Routers fill the request's fields through
:func:`note_model` and :func:`note_guard` (they live in the ASGI scope's ``state``); the
Gateway's :class:`serve_apps.http.middleware.AuditMiddleware` writes the record when
the response has been sent (a stream included).

Every Gateway replica appends to the same file by default (one ``write`` of one line
per record, ``O_APPEND``: lines of concurrent replicas do not interleave on a local
file system).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import MutableMapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medray.config import ConfigError
from medray.paths import medray_home
from medray.safety import SafetyReport

ANONYMOUS = "anonymous"
AUDIT_STATE = "medray_audit"  # key of the request's audit fields in scope["state"]


@dataclass(frozen=True)
class AuditSettings:
    """Where the audit log goes (``audit:`` of the Serve app's args).

    Attributes:
        enabled: write the audit log.
        path: the JSON-lines file; "" = ``$MEDRAY_HOME/logs/audit.jsonl`` of the replica.
    """

    enabled: bool = True
    path: str = ""

    def __post_init__(self) -> None:
        if self.path and not Path(self.path).expanduser().is_absolute():
            raise ConfigError(f"audit.path must be an absolute path, got {self.path!r}")

    def file(self) -> Path:
        """The audit file this replica appends to."""
        if self.path:
            return Path(self.path).expanduser()
        return medray_home() / "logs" / "audit.jsonl"


@dataclass(frozen=True)
class AuditRecord:
    """One API request as the audit log keeps it (no request or answer text)."""

    time: str
    request_id: str
    key_id: str
    method: str
    endpoint: str
    model: str | None
    guard: str  # allowed | refused | not_checked
    guard_reason: str  # ok | non_medical | injection | safety_disabled | none
    risk_level: int | None
    status: int
    latency_ms: float

    def to_json(self) -> str:
        """The record as one JSON line (no trailing newline)."""
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=True)


def guard_reason(report: SafetyReport) -> str:
    """A reason code for the guard's decision on a request (no text of the request)."""
    if not report.refused:
        return "ok"
    if report.domain is not None and not report.domain.medical:
        return "non_medical"
    if report.injection:
        return "injection"
    return "policy"


def _fields(state: MutableMapping[str, Any]) -> dict[str, Any]:
    return state.setdefault(AUDIT_STATE, {})


def note_key(state: MutableMapping[str, Any], key_id: str) -> None:
    """Record which key (its id) made the request."""
    _fields(state)["key_id"] = key_id


def note_model(state: MutableMapping[str, Any], model: str | None) -> None:
    """Record the model or adapter that answers the request (None: the base model)."""
    _fields(state)["model"] = model


def note_guard(state: MutableMapping[str, Any], report: SafetyReport) -> None:
    """Record the guard's decision on the request and the risk level of its report; a
    later call (the answer's merged report) raises the risk level, never the decision."""
    f = _fields(state)
    if "guard" not in f:
        f["guard"] = "refused" if report.refused else "allowed"
        f["guard_reason"] = guard_reason(report)
    f["risk_level"] = max(int(report.risk_level), int(f.get("risk_level") or 0))


def note_guard_skipped(state: MutableMapping[str, Any], reason: str) -> None:
    """Record that the guard did not check the request and why (a reason code)."""
    f = _fields(state)
    f.setdefault("guard", "not_checked")
    f.setdefault("guard_reason", reason)


def build_record(
    state: MutableMapping[str, Any],
    *,
    method: str,
    endpoint: str,
    status: int,
    latency_ms: float,
    now: datetime | None = None,
) -> AuditRecord:
    """The audit record of a finished request from what the request noted in ``state``."""
    f = state.get(AUDIT_STATE, {})
    when = (now or datetime.now(UTC)).isoformat(timespec="milliseconds")
    return AuditRecord(
        time=when,
        request_id=str(state.get("request_id", "-")),
        key_id=f.get("key_id", ANONYMOUS),
        method=method,
        endpoint=endpoint,
        model=f.get("model"),
        guard=f.get("guard", "not_checked"),
        guard_reason=f.get("guard_reason", "none"),
        risk_level=f.get("risk_level"),
        status=int(status),
        latency_ms=round(latency_ms, 1),
    )


class AuditLog:
    """Appends :class:`AuditRecord` lines to one file (created with mode 0600)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def write(self, record: AuditRecord) -> None:
        """Append one record as one line (a single ``write``)."""
        data = (record.to_json() + "\n").encode()
        with self._lock:
            os.write(self._fd, data)

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def read_records(path: Path) -> list[dict[str, Any]]:
    """The records of an audit file, oldest first (for tests and tools)."""
    lines = Path(path).read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


__all__ = [
    "ANONYMOUS",
    "AuditLog",
    "AuditRecord",
    "AuditSettings",
    "build_record",
    "guard_reason",
    "note_guard",
    "note_guard_skipped",
    "note_key",
    "note_model",
    "read_records",
]
