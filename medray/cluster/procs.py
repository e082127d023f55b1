"""Process and port helpers for the local cluster: find, check and stop what we started."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil


def port_owner(port: int) -> str:
    """Best-effort description of the process listening on ``port`` (empty if unknown)."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if (
                conn.laddr
                and conn.laddr.port == port
                and conn.status == psutil.CONN_LISTEN
                and conn.pid
            ):
                with contextlib.suppress(psutil.Error):
                    p = psutil.Process(conn.pid)
                    return f"pid {conn.pid} ({p.name()})"
                return f"pid {conn.pid}"
    except (psutil.Error, OSError):
        pass
    return ""


def port_free(host: str, port: int) -> bool:
    """True if a TCP server could bind ``host:port`` now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as servers use it: a just-closed port in TIME_WAIT counts as free,
        # a port with a live listener does not.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    # Also refuse ports something listens on at another address (e.g. 0.0.0.0).
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) != 0


def free_port(host: str = "127.0.0.1") -> int:
    """A port the OS reports free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_port(host: str, port: int, timeout: float) -> bool:
    """Wait until something accepts connections on ``host:port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            if s.connect_ex((host, port)) == 0:
                return True
        time.sleep(0.2)
    return False


def alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def identity(pid: int) -> dict | None:
    """What identifies a running process beyond its pid (pids are reused): its start
    time and command line, recorded when it starts. None if it does not run."""
    try:
        p = psutil.Process(pid)
        return {"pid": pid, "create_time": p.create_time(), "cmdline": p.cmdline()}
    except psutil.Error:
        return None


def same_process(record: dict) -> bool:
    """True if ``record`` (from :func:`identity`) still describes the live process at its
    pid: same start time and command line. A record without them never matches."""
    if "create_time" not in record or "cmdline" not in record:
        return False
    now = identity(int(record["pid"]))
    return (
        now is not None
        and abs(now["create_time"] - float(record["create_time"])) < 0.01
        and now["cmdline"] == list(record["cmdline"])
        and alive(int(record["pid"]))
    )


def group_members(pgids: Iterable[int], not_before: float = 0.0) -> set[int]:
    """Pids of live processes in any of the process groups ``pgids``.

    ``not_before`` (a UNIX time) skips processes created earlier, so a recycled group id
    never makes us touch an unrelated process.
    """
    wanted = set(pgids)
    found: set[int] = set()
    if not wanted:
        return found
    for p in psutil.process_iter(["pid", "create_time"]):
        try:
            if os.getpgid(p.pid) in wanted and p.info["create_time"] >= not_before - 1:
                found.add(p.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return found


def with_descendants(pids: Iterable[int]) -> set[int]:
    """``pids`` plus all their live descendants (a job driver may start its own session)."""
    out: set[int] = set()
    for pid in pids:
        try:
            p = psutil.Process(pid)
            out.add(pid)
            out.update(c.pid for c in p.children(recursive=True))
        except psutil.Error:
            continue
    return out


def terminate(pids: Iterable[int], grace_s: float = 10.0) -> set[int]:
    """SIGTERM ``pids``, wait up to ``grace_s``, SIGKILL what is left; return survivors."""
    procs = []
    for pid in set(pids):
        if pid == os.getpid():
            continue
        try:
            p = psutil.Process(pid)
            p.send_signal(signal.SIGTERM)
            procs.append(p)
        except psutil.Error:
            continue
    _, left = psutil.wait_procs(procs, timeout=grace_s)
    for p in left:
        with contextlib.suppress(psutil.Error):
            p.kill()
    _, left = psutil.wait_procs(left, timeout=5)
    return {p.pid for p in left if alive(p.pid)}


def start_group(cmd: list[str], env: dict[str, str], log_file: Path) -> subprocess.Popen:
    """Start ``cmd`` in a process group of its own, its output appended to ``log_file``."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as out:
        return subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
