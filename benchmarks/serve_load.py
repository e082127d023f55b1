"""Load helpers shared by the serving benchmarks (``serve.py``, ``faults.py``).

Closed-loop HTTP load against ``/v1/analyze`` (SSE read to ``done``) and
``/v1/chat/completions`` on 127.0.0.1 only, bounded in time and count; the small Milvus
collections both benchmarks index with the app's own models; readiness, replica sampling
and tear-down.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
LOOPBACK = "127.0.0.1"
MAX_REQUESTS_PER_RUN = 20_000
QUESTION = "Is there a pleural effusion or cardiomegaly on this chest X-ray?"


def emit(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _png_b64(seed: int) -> str:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    img = Image.new("L", (224, 224), 25)
    d = ImageDraw.Draw(img)
    d.ellipse([40, 30, 104, 190], fill=int(rng.integers(90, 200)))
    d.ellipse([120, 30, 184, 190], fill=int(rng.integers(90, 200)))
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


# ---------------------------------------------------------------------------- setup


def index_collections(uri: str, cases: str, knowledge: str) -> None:
    """Small cases + knowledge collections embedded with the app's own models."""
    from PIL import Image

    from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings, load_corpus
    from medray.retrieval.rows import case_rows
    from medray.serving.embedder import Embedder

    emb = Embedder("tiny-clip", "minilm-l6")
    s = MilvusSettings(uri=uri, cases_collection=cases, knowledge_collection=knowledge)
    labels = ["pleural effusion", "cardiomegaly", "pneumothorax", "no finding"]
    images = [
        Image.open(io.BytesIO(base64.b64decode(_png_b64(i).split(",", 1)[1]))) for i in range(64)
    ]
    reports = [f"Findings: {labels[i % 4]}, case {i}." for i in range(64)]
    store = CaseStore(s)
    rows = case_rows(
        emb, images, reports, [[labels[i % 4]] for i in range(64)], id_prefix="bench",
        source="benchmark",
    )  # fmt: skip
    store.create(len(rows[0]["image_vec"]), {"clip_model": "tiny-clip"}, drop_existing=True)
    store.upsert(rows)
    store.warm()
    kb = KnowledgeStore(s)
    chunks = load_corpus(REPO / "datasets" / "knowledge")
    dense = emb.texts([c.text for c in chunks])
    kb.create(dense.shape[1], {"text_model": "minilm-l6"}, drop_existing=True)
    kb.upsert([{**c.to_row(), "dense": dense[i].tolist()} for i, c in enumerate(chunks)])
    kb.flush()


def wait_ready(base: str, timeout: float, proc: subprocess.Popen | None = None) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{base} exited with code {proc.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=10).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"{base} not ready after {timeout:.0f}s")


async def _analyze_once(client, headers, image: str, max_new: int, stages: list) -> bool:
    body = {"image": image, "question": QUESTION, "k": 3, "max_new_tokens": max_new}
    async with client.stream("POST", "/v1/analyze", json=body, headers=headers) as resp:
        if resp.status_code != 200:
            await resp.aread()
            return False
        done = error = False
        event = ""
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line[7:]
                error |= event == "error"
            elif event == "done" and line.startswith("data: "):
                done = True
                stages.append(json.loads(line[6:]).get("timings_ms", {}))
        return done and not error


async def _chat_once(client, headers, image: str, max_new: int, stages: list) -> bool:
    body = {
        "model": "medray-reasoner",
        "max_tokens": max_new,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": QUESTION},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            }
        ],
    }
    resp = await client.post("/v1/chat/completions", json=body, headers=headers)
    return resp.status_code == 200 and "choices" in resp.json()


async def run_load(base: str, endpoint: str, concurrency: int, duration: float, max_new: int):
    """``concurrency`` closed-loop workers for ``duration`` seconds (bounded in count)."""
    import httpx

    assert base.startswith(f"http://{LOOPBACK}:"), "load goes to 127.0.0.1 only"
    once = _analyze_once if endpoint == "analyze" else _chat_once
    images = [_png_b64(i) for i in range(8)]
    latencies: list[float] = []
    errors: list[str] = []
    stages: list[dict[str, float]] = []  # server-side stage timings of /v1/analyze
    sent = 0
    deadline = time.perf_counter() + duration
    limits = httpx.Limits(
        max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4
    )

    async with httpx.AsyncClient(base_url=base, timeout=300, limits=limits) as client:

        async def worker(w: int) -> None:
            nonlocal sent
            i = w
            while time.perf_counter() < deadline and sent < MAX_REQUESTS_PER_RUN:
                sent += 1
                t0 = time.perf_counter()
                try:
                    ok = await once(client, {}, images[i % len(images)], max_new, stages)
                except Exception as e:
                    ok = False
                    errors.append(type(e).__name__)
                else:
                    if not ok:
                        errors.append("bad response")
                latencies.append(time.perf_counter() - t0)
                i += concurrency

        t0 = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(concurrency)))
        wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "p50_ms": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
        "p95_ms": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
        "throughput_rps": round((len(latencies) - len(errors)) / wall, 3),
        "wall_s": round(wall, 1),
        **(
            {
                "mean_stage_ms": {
                    k: round(float(np.mean([st[k] for st in stages if k in st])), 1)
                    for k in sorted({k for st in stages for k in st})
                }
            }
            if stages
            else {}
        ),
    }


def tear_down(dashboard_url: str, started: bool) -> None:
    """End of a benchmark run: remove the ``medray`` Serve app (a failure is printed, not
    raised), then stop the local cluster if this run started it."""
    from medray.cluster import local
    from medray.serving.deploy import remove

    try:
        remove(dashboard_url, "medray")
    except Exception as e:
        print(f"could not remove the app: {e}", file=sys.stderr)
    if started:
        local.down()


def replica_niceness() -> int:
    """Niceness of this cluster's Serve replica processes (0 if none is found)."""
    import psutil

    for proc in psutil.process_iter(["cmdline", "nice"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "ServeReplica:medray:" in cmd:
            return int(proc.info["nice"] or 0)
    return 0


class ReplicaSampler(threading.Thread):
    """Samples running replicas per deployment every ``period`` seconds."""

    def __init__(self, dashboard: str, app: str, period: float = 2.0) -> None:
        super().__init__(daemon=True)
        self.dashboard, self.app, self.period = dashboard, app, period
        self.samples: list[tuple[float, str, dict[str, int]]] = []
        self.phase = "before"
        self._stop = threading.Event()

    def run(self) -> None:
        from medray.serving.deploy import replica_counts

        while not self._stop.is_set():
            # The dashboard may be slow under load: skip a sample rather than stop.
            with contextlib.suppress(Exception):
                self.samples.append(
                    (time.time(), self.phase, replica_counts(self.dashboard, self.app))
                )
            self._stop.wait(self.period)

    def stop(self) -> None:
        self._stop.set()

    def latest(self) -> dict[str, int]:
        return self.samples[-1][2] if self.samples else {}

    def max_during(self, phase: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for _, ph, counts in self.samples:
            if ph == phase:
                for k, v in counts.items():
                    out[k] = max(out.get(k, 0), v)
        return out
