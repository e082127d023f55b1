"""Fault drills on the Serve app under load, bounded, 127.0.0.1 only (issue 18 acceptance).

On a local cluster started here with MedRay's own cluster code (ports shifted by
``--port-offset``; its own MEDRAY_HOME unless one is set) and the app of
``serve_apps/configs/local.yaml`` as committed (rate limits and queue bounds included),
with small Milvus collections indexed by ``benchmarks.serve_load``'s helper:

(a) Milvus killed (SIGKILL) for ``--milvus-down`` seconds during c=8 load on
    ``/v1/analyze`` and ``/v1/search`` (image search), then started again: requests sent /
    failed / 5xx, time from the kill to the first degraded answer (target <= 2 s), the
    slowest search answered while Milvus was down, and the time from Milvus listening again
    to the first answer with retrieval back (target <= 10 s);
(b) a Reasoner replica's process killed (SIGKILL) during c=8 load on ``/v1/analyze`` and
    ``/v1/chat/completions``: failed share (target <= 1%) and the time until Serve runs a
    replacement replica;
(c) overload at c=64 on analyze and chat: the status histogram (only 200, 429 and 503;
    never a client timeout or a 5xx other than 503).

Prints one JSON line per result (``--out`` also writes them). Every loop is bounded in
time and count; only processes of the cluster started here are killed.

    nice -n 10 python -m benchmarks.faults --port-offset 300      # ~12 minutes on 2 cores
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks.serve_load import LOOPBACK, MAX_REQUESTS_PER_RUN, QUESTION, _png_b64, tear_down

CLIENT_TIMEOUT_S = 120.0  # a request still unanswered after this is a "timeout"


@dataclass
class Result:
    endpoint: str
    t0: float
    t1: float
    status: int  # HTTP status; 0: no answer (connection error or client timeout)
    outcome: str  # ok | degraded | failed | timeout
    detail: str = ""


async def _analyze(client, image: str, max_new: int) -> tuple[int, str, str]:
    body = {"image": image, "question": QUESTION, "k": 3, "max_new_tokens": max_new}
    async with client.stream("POST", "/v1/analyze", json=body) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return resp.status_code, "failed", resp.text[:200]
        event, degraded, done, error = "", False, False, ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                if event == "error":
                    error = line[6:200]
                elif event in ("similar_cases", "knowledge") and '"error"' in line:
                    degraded = True
                elif event == "done":
                    done = True
        if error or not done:
            return 200, "failed", error or "stream ended without done"
        return 200, "degraded" if degraded else "ok", ""


async def _search(client, image: str, max_new: int) -> tuple[int, str, str]:
    resp = await client.post("/v1/search", json={"image": image, "k": 3})
    if resp.status_code != 200:
        return resp.status_code, "failed", resp.text[:200]
    return 200, "ok" if resp.json().get("available") else "degraded", ""


async def _chat(client, image: str, max_new: int) -> tuple[int, str, str]:
    content = [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": image}},
    ]
    body = {
        "model": "medray-reasoner",
        "max_tokens": max_new,
        "messages": [{"role": "user", "content": content}],
    }
    resp = await client.post("/v1/chat/completions", json=body)
    ok = resp.status_code == 200 and "choices" in resp.json()
    return resp.status_code, "ok" if ok else "failed", "" if ok else resp.text[:200]


CALLS = {"analyze": _analyze, "search": _search, "chat": _chat}


async def _load(base: str, endpoints, concurrency: int, duration: float, max_new: int):
    """``concurrency`` closed-loop workers cycling through ``endpoints`` for ``duration`` s."""
    import httpx

    assert base.startswith(f"http://{LOOPBACK}:"), "load goes to 127.0.0.1 only"
    images = [_png_b64(i) for i in range(8)]
    results: list[Result] = []
    deadline = time.time() + duration
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, limits=limits) as client:

        async def worker(w: int) -> None:
            i = w
            while time.time() < deadline and len(results) < MAX_REQUESTS_PER_RUN:
                endpoint = endpoints[i % len(endpoints)]
                t0 = time.time()
                try:
                    status, outcome, detail = await CALLS[endpoint](
                        client, images[i % len(images)], max_new
                    )
                except httpx.TimeoutException:
                    status, outcome, detail = 0, "timeout", "client timeout"
                except httpx.HTTPError as e:
                    status, outcome, detail = 0, "failed", type(e).__name__
                results.append(Result(endpoint, t0, time.time(), status, outcome, detail))
                i += concurrency

        await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return results


class Load(threading.Thread):
    """:func:`_load` in a thread, so the main thread can inject the fault meanwhile."""

    def __init__(self, *args) -> None:
        super().__init__(daemon=True)
        self.args, self.results = args, []

    def run(self) -> None:
        self.results = asyncio.run(_load(*self.args))


def summary(results: list[Result]) -> dict:
    by = collections.defaultdict(collections.Counter)
    for r in results:
        by[r.endpoint]["sent"] += 1
        by[r.endpoint][r.outcome] += 1
        by[r.endpoint][f"http_{r.status}"] += 1
    failed = sum(r.outcome in ("failed", "timeout") for r in results)
    return {
        "sent": len(results),
        "failed": failed,
        "failed_share": round(failed / max(1, len(results)), 4),
        "http_5xx": sum(r.status >= 500 for r in results),
        "timeouts": sum(r.outcome == "timeout" for r in results),
        "by_endpoint": {k: dict(v) for k, v in sorted(by.items())},
        "failure_details": sorted(
            {r.detail[:120] for r in results if r.outcome != "ok" and r.detail}
        )[:5],
    }


def drill_milvus(state, base: str, ns) -> dict:
    """(a) Milvus killed for ``ns.milvus_down`` s during c=8 analyze + search load."""
    from medray.cluster import milvus_server, procs

    lead, tail = 15.0, 40.0
    load = Load(base, ["search", "analyze"], 8, lead + ns.milvus_down + tail, ns.max_new_tokens)
    load.start()
    time.sleep(lead)
    t_kill = time.time()
    milvus_server.kill_milvus(state)
    time.sleep(ns.milvus_down)
    t_start = time.time()
    milvus_server.start_milvus(state)
    port = int(state.milvus_uri.rsplit(":", 1)[1])
    assert procs.wait_port(LOOPBACK, port, 120), "Milvus did not come back"
    t_back = time.time()
    load.join(lead + ns.milvus_down + tail + CLIENT_TIMEOUT_S + 30)
    res = load.results
    degraded = [r for r in res if r.outcome == "degraded" and r.t1 > t_kill]
    down = [r for r in res if r.endpoint == "search" and t_kill < r.t0 and r.t1 < t_start]
    back = [r for r in res if r.outcome == "ok" and r.t0 >= t_back]
    first_ok = {e: min((r.t1 for r in back if r.endpoint == e), default=None) for e in CALLS}
    return {
        "bench": "faults",
        "case": "a: Milvus killed",
        "concurrency": 8,
        "milvus_down_s": round(t_start - t_kill, 1),
        "milvus_listening_after_start_s": round(t_back - t_start, 1),
        **summary(res),
        "first_degraded_after_kill_s": round(min(r.t1 for r in degraded) - t_kill, 2)
        if degraded
        else None,
        "search_while_down": len(down),
        "search_while_down_degraded": sum(r.outcome == "degraded" for r in down),
        "search_while_down_max_s": round(max((r.t1 - r.t0 for r in down), default=0), 2),
        # The first answer with retrieval back, per endpoint (an analyze takes seconds
        # itself: its sent time says when the service had recovered).
        "recovered_after_milvus_back_s": {
            e: round(t - t_back, 2) for e, t in first_ok.items() if t is not None
        },
        "first_recovered_analyze_sent_after_back_s": round(
            min(r.t0 for r in back if r.endpoint == "analyze") - t_back, 2
        )
        if any(r.endpoint == "analyze" for r in back)
        else None,
        "degraded_after_milvus_back": sum(r.outcome == "degraded" and r.t0 >= t_back for r in res),
    }


def _reasoner_replicas(state) -> dict[int, str]:
    """pid -> command line of this cluster's Reasoner replica processes."""
    import psutil

    from medray.cluster import local

    ours = local.recorded_pids(state)
    out = {}
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "ServeReplica:medray:Reasoner" in cmd and proc.info["pid"] in ours:
            out[proc.info["pid"]] = cmd
    return out


def drill_replica(state, base: str, ns) -> dict:
    """(b) a Reasoner replica's process killed during c=8 analyze + chat load."""
    import signal

    from medray.serving.deploy import replica_counts

    lead, tail = 20.0, 60.0
    load = Load(base, ["chat", "analyze"], 8, lead + tail, ns.max_new_tokens)
    load.start()
    time.sleep(lead)
    before = _reasoner_replicas(state)
    count_before = replica_counts(state.dashboard_url, "medray").get("Reasoner", 0)
    victim = min(before)
    t_kill = time.time()
    os.kill(victim, signal.SIGKILL)  # a replica of the cluster started here (checked above)
    replaced = None
    while time.time() < t_kill + tail + 60:
        now = _reasoner_replicas(state)
        counts = replica_counts(state.dashboard_url, "medray").get("Reasoner", 0)
        if set(now) - set(before) and counts >= 1:
            replaced = round(time.time() - t_kill, 1)
            break
        time.sleep(1)
    load.join(lead + tail + CLIENT_TIMEOUT_S + 30)
    res = load.results
    after_kill = [r for r in res if r.t1 >= t_kill]
    return {
        "bench": "faults",
        "case": "b: Reasoner replica killed",
        "concurrency": 8,
        "reasoner_replicas_before": count_before,
        "replica_processes_before": len(before),
        **summary(res),
        "failed_after_kill": sum(r.outcome != "ok" for r in after_kill),
        "replacement_running_after_s": replaced,
    }


def drill_overload(base: str, ns) -> dict:
    """(c) c=64 on analyze + chat: only 200, 429 or 503, never a timeout or another 5xx."""
    load = Load(base, ["analyze", "chat"], 64, ns.overload_duration, ns.max_new_tokens)
    load.start()
    load.join(ns.overload_duration + CLIENT_TIMEOUT_S + 30)
    res = load.results
    statuses = collections.Counter(r.status for r in res)
    lat = sorted(r.t1 - r.t0 for r in res if r.status == 200)
    return {
        "bench": "faults",
        "case": "c: overload",
        "concurrency": 64,
        **summary(res),
        "status_histogram": {str(k): v for k, v in sorted(statuses.items())},
        "only_200_429_503": set(statuses) <= {200, 429, 503},
        "p95_200_s": round(lat[int(0.95 * (len(lat) - 1))], 1) if lat else None,
        "max_503_s": round(max((r.t1 - r.t0 for r in res if r.status == 503), default=0), 2),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port-offset", type=int, default=0, help="shift every port (cluster, Serve)")
    p.add_argument("--serve-port", type=int, default=8000)
    p.add_argument("--milvus-down", type=float, default=30.0)
    p.add_argument("--overload-duration", type=float, default=30.0)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--cases", default="a,b,c")
    p.add_argument("--out", default="", help="also write the JSON lines to this file")
    ns = p.parse_args(argv)
    cases = set(ns.cases.split(","))
    # A cluster of its own: never the user's (~/.medray) nor another run's.
    own_home = "MEDRAY_HOME" not in os.environ
    if own_home:
        os.environ["MEDRAY_HOME"] = tempfile.mkdtemp(prefix="medray-faults-")

    from benchmarks.serve_load import index_collections, wait_ready
    from medray.cluster import local

    d = local.LocalClusterConfig()
    off = ns.port_offset
    cfg = local.LocalClusterConfig(
        ray_port=d.ray_port + off,
        dashboard_port=d.dashboard_port + off,
        client_port=d.client_port + off,
        milvus_port=d.milvus_port + off,
    )
    print("starting a local cluster (medray cluster up) ...", file=sys.stderr)
    try:
        state, started = local.up(cfg)
    except local.ClusterError:
        if own_home:
            shutil.rmtree(os.environ["MEDRAY_HOME"], ignore_errors=True)
        raise
    os.environ.update(local.client_env(state))
    lines: list[dict] = []

    def emit(record: dict) -> None:
        lines.append(record)
        print(json.dumps(record), flush=True)
        if ns.out:
            Path(ns.out).write_text("".join(json.dumps(r) + "\n" for r in lines))

    from medray.serving.deploy import deploy, load_serve_config

    try:
        index_collections(state.milvus_uri, "fault_cases", "fault_knowledge")
        overrides = [
            f"generation.max_new_tokens={ns.max_new_tokens}",
            "retrieval.milvus.cases_collection=fault_cases",
            "retrieval.milvus.knowledge_collection=fault_knowledge",
        ]
        port = ns.serve_port + off
        config = load_serve_config("serve_apps/configs/local.yaml", overrides, port=port)
        print("deploying the Serve app ...", file=sys.stderr)
        t0 = time.time()
        deploy(config, state.dashboard_url, wait_s=900)
        base = f"http://{LOOPBACK}:{port}"
        wait_ready(base, 300)
        asyncio.run(_load(base, ["analyze", "search", "chat"], 2, 5, ns.max_new_tokens))  # warm
        emit(
            {
                "bench": "setup",
                "deploy_s": round(time.time() - t0, 1),
                "load_avg_1m": os.getloadavg()[0],
            }
        )
        if "a" in cases:
            emit(drill_milvus(state, base, ns))
        if "b" in cases:
            emit(drill_replica(state, base, ns))
        if "c" in cases:
            emit(drill_overload(base, ns))
        emit({"bench": "done", "load_avg_1m": round(os.getloadavg()[0], 2)})
    finally:
        tear_down(state.dashboard_url, started)
        if own_home:
            shutil.rmtree(os.environ["MEDRAY_HOME"], ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
