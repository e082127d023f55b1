"""Serve graph vs the single-process baseline, under bounded load on 127.0.0.1.

In one run, on the local cluster (started here unless one is up, and stopped again):

1. deploys the Serve app from ``serve_apps/configs/local.yaml`` and starts the
   single-process FastAPI + uvicorn baseline (``serve_apps.baseline``: the same HTTP API
   over the same plain classes), both against small Milvus collections indexed here;
2. for ``/v1/analyze`` (SSE, read to ``done``) and ``/v1/chat/completions`` (image +
   text) at concurrency 1, 8 and 32: p50 / p95 latency, throughput and errors for both,
   the graph's c=32 analyze run lasting ``--soak`` seconds;
3. embedder throughput through deployment handles with and without ``@serve.batch`` at
   c=32, for report-length texts, short texts (sentence embedder) and images (CLIP),
   with the replica's model milliseconds per item (the rest is serving overhead);
4. replicas per deployment before, during and after the load (autoscaling).

Prints one JSON line per result and a summary line with the ratios. Load goes to
127.0.0.1 only and every loop is bounded in time and count.

    python -m benchmarks.serve                 # ~12 minutes on 2 cores
    python -m benchmarks.serve --duration 10 --soak 30 --concurrency 1,8
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
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
    from medray.serving.embedder import Embedder

    emb = Embedder("tiny-clip", "minilm-l6")
    s = MilvusSettings(uri=uri, cases_collection=cases, knowledge_collection=knowledge)
    labels = ["pleural effusion", "cardiomegaly", "pneumothorax", "no finding"]
    images = [
        Image.open(io.BytesIO(base64.b64decode(_png_b64(i).split(",", 1)[1]))) for i in range(64)
    ]
    reports = [f"Findings: {labels[i % 4]}, case {i}." for i in range(64)]
    iv, tv = emb.clip_images(images), emb.clip_texts(reports)
    store = CaseStore(s)
    store.create(iv.shape[1], {"clip_model": "tiny-clip"}, drop_existing=True)
    store.upsert(
        [
            {
                "sample_id": f"bench-{i}",
                "image_vec": iv[i].tolist(),
                "text_vec": tv[i].tolist(),
                "report": reports[i],
                "labels": [labels[i % 4]],
                "modality": "X-Ray",
                "organ": "chest",
                "split": "test",
                "source": "benchmark",
                "study_id": f"b{i}",
            }
            for i in range(64)
        ]
    )
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


# ---------------------------------------------------------------------------- load


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


SHORT_TEXT = "Chest radiograph {i}: small left pleural effusion, no pneumothorax."
# A knowledge query as /v1/analyze builds it (summary + answer + question), report-sized.
REPORT_TEXT = (
    "Case {i}. Findings: there is a small left pleural effusion with blunting of the "
    "costophrenic angle and adjacent basal atelectasis. The cardiac silhouette is mildly "
    "enlarged. No pneumothorax. No focal consolidation. Impression: small left effusion, "
    "mild cardiomegaly. Question: is there a pleural effusion or cardiomegaly?"
)


EMBEDDER_INPUTS = {"report": REPORT_TEXT, "short": SHORT_TEXT, "image": None}


def _embedder_inputs(kind: str) -> list:
    """64 distinct inputs: texts, or 224x224 PIL images (CLIP) for ``kind="image"``."""
    if kind == "image":
        from PIL import Image

        return [
            Image.open(io.BytesIO(base64.b64decode(_png_b64(i).split(",", 1)[1]))).convert("RGB")
            for i in range(64)
        ]
    return [EMBEDDER_INPUTS[kind].format(i=i) for i in range(64)]


def embedder_throughput(
    app: str, batched: bool, concurrency: int, duration: float, kind: str, generators: int = 4
) -> dict:
    """Requests/s of single-input embedding calls through the Embedder's handle.

    ``kind``: ``report`` / ``short`` (sentence embedder, ``text``) or ``image`` (CLIP,
    ``clip_image``); unbatched: the same code on a batch of one (``*_unbatched``). The
    calls come from ``generators`` Ray actors (``concurrency`` in flight in total), so
    one client process's handle overhead does not cap what the replica can do.
    """
    import ray
    from ray import serve

    @ray.remote(num_cpus=0)
    class Load:
        async def run(self, batched: bool, conc: int, duration: float, name: str, inputs) -> int:
            handle = serve.get_deployment_handle("Embedder", app_name=app)
            method = getattr(handle, name if batched else f"{name}_unbatched")
            done = 0
            deadline = time.perf_counter() + duration

            async def worker(w: int) -> None:
                nonlocal done
                i = w
                while time.perf_counter() < deadline and done < MAX_REQUESTS_PER_RUN:
                    await method.remote(inputs[i % len(inputs)])
                    done += 1
                    i += conc

            await method.remote(inputs[0])  # warm-up
            await asyncio.gather(*(worker(w) for w in range(conc)))
            return done

    per = max(1, concurrency // generators)
    name = "clip_image" if kind == "image" else "text"
    inputs = ray.put(_embedder_inputs(kind))
    actors = [Load.remote() for _ in range(generators)]
    ray.get([a.__ray_ready__.remote() for a in actors])
    stats = serve.get_deployment_handle("Embedder", app_name=app).batch_stats
    stats.remote(reset=True).result()
    t0 = time.perf_counter()
    done = sum(ray.get([a.run.remote(batched, per, duration, name, inputs) for a in actors]))
    wall = time.perf_counter() - t0
    seen = stats.remote(reset=True).result()  # one replica's view (min_replicas is 1)
    for a in actors:
        ray.kill(a)
    return {
        "requests": done,
        "throughput_rps": round(done / wall, 2),
        "wall_s": round(wall, 1),
        "load_generators": generators,
        # batches, mean size, model ms per item: the model's share of each request
        "replica": seen,
    }


# ---------------------------------------------------------------------------- main


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20, help="seconds per load run")
    p.add_argument("--soak", type=float, default=60, help="seconds of the graph's c=32 analyze run")
    p.add_argument("--concurrency", default="1,8,32")
    p.add_argument("--endpoints", default="analyze,chat", help='"none": embedder only')
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--serve-port", type=int, default=8000)
    p.add_argument("--baseline-port", type=int, default=8600)
    p.add_argument("--embedder-duration", type=float, default=15)
    p.add_argument(
        "--downscale-wait", type=float, default=120, help="max seconds to wait for scale-down"
    )
    p.add_argument(
        "--port-offset",
        type=int,
        default=0,
        help="shift every port (cluster started here, Serve, baseline) to share a machine",
    )
    p.add_argument(
        "--worker-niceness",
        type=int,
        default=None,
        help="niceness of Ray workers (Serve replicas) in a cluster started here; Ray's "
        "default is 15, which starves the graph when other work shares the machine "
        "(the baseline always gets the replicas' niceness)",
    )
    p.add_argument("--keep-up", action="store_true", help="leave the app and cluster running")
    ns = p.parse_args(argv)
    concurrencies = [int(c) for c in ns.concurrency.split(",")]
    ns.serve_port += ns.port_offset
    ns.baseline_port += ns.port_offset
    endpoints = [e for e in ns.endpoints.split(",") if e and e != "none"]

    from medray.cluster import local

    state = local.read_state()
    started = False
    if state is None or not local.status(state)["healthy"]:
        print("starting a local cluster (medray cluster up) ...", file=sys.stderr)
        if ns.worker_niceness is not None:
            os.environ["RAY_worker_niceness"] = str(ns.worker_niceness)  # noqa: SIM112 (Ray reads this exact name)
        d = local.LocalClusterConfig()
        state, started = local.up(
            local.LocalClusterConfig(
                ray_port=d.ray_port + ns.port_offset,
                dashboard_port=d.dashboard_port + ns.port_offset,
                client_port=d.client_port + ns.port_offset,
                milvus_port=d.milvus_port + ns.port_offset,
            )
        )
    os.environ.update(local.client_env(state))  # before Ray is imported (token auth)

    from medray.serving.deploy import deploy, load_serve_config

    overrides = [
        f"generation.max_new_tokens={ns.max_new_tokens}",
        "retrieval.milvus.cases_collection=bench_cases",
        "retrieval.milvus.knowledge_collection=bench_knowledge",
        # Capacity is measured, not admission: one client at c=32 would be rate limited.
        "rate_limit.enabled=false",
    ]
    baseline = None
    sampler = None
    try:
        print("indexing benchmark collections ...", file=sys.stderr)
        index_collections(state.milvus_uri, "bench_cases", "bench_knowledge")
        config = load_serve_config("serve_apps/configs/local.yaml", overrides, port=ns.serve_port)
        print("deploying the Serve app ...", file=sys.stderr)
        deploy(config, state.dashboard_url, wait_s=600)
        graph = f"http://{LOOPBACK}:{ns.serve_port}"
        base = f"http://{LOOPBACK}:{ns.baseline_port}"
        # Ray runs its workers (every Serve replica) at a raised niceness; give the
        # baseline the same, or the scheduler would favour it over the graph whenever
        # anything else runs on the machine.
        niceness = replica_niceness()
        emit({"bench": "setup", "replica_niceness": niceness, "baseline_niceness": niceness})
        baseline = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serve_apps.baseline",
                "--port",
                str(ns.baseline_port),
                *overrides,
            ],
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
            preexec_fn=(lambda: os.nice(niceness)) if niceness > 0 else None,
        )
        wait_ready(graph, 300)
        wait_ready(base, 300, baseline)
        for target in (graph, base):  # warm both (first requests load lazily)
            asyncio.run(run_load(target, "analyze", 2, 3, ns.max_new_tokens))
            asyncio.run(run_load(target, "chat", 2, 3, ns.max_new_tokens))

        sampler = ReplicaSampler(state.dashboard_url, "medray")
        sampler.start()
        time.sleep(3)
        before = sampler.latest()
        emit({"bench": "replicas", "phase": "before", "replicas": before})
        sampler.phase = "during"

        results: dict[tuple[str, int, str], dict] = {}
        for endpoint in endpoints:
            for c in concurrencies:
                # Alternate who goes first so slow drift on a shared machine evens out.
                order = [("baseline", base), ("graph", graph)]
                if c % 2 == 0:
                    order.reverse()
                for name, url in order:
                    dur = (
                        ns.soak
                        if (name == "graph" and c == max(concurrencies) and endpoint == "analyze")
                        else ns.duration
                    )
                    r = asyncio.run(run_load(url, endpoint, c, dur, ns.max_new_tokens))
                    results[(endpoint, c, name)] = r
                    emit(
                        {
                            "bench": "http",
                            "endpoint": endpoint,
                            "concurrency": c,
                            "target": name,
                            **r,
                        }
                    )
        during = sampler.max_during("during")
        emit({"bench": "replicas", "phase": "during (max)", "replicas": during})

        import ray

        ray.init(address=state.ray_address, log_to_driver=False)
        emb: dict[tuple[str, bool], dict] = {}
        for kind in EMBEDDER_INPUTS:
            # Alternate who goes first so slow drift on a shared machine evens out.
            for batched in (False, True) if kind != "short" else (True, False):
                r = embedder_throughput("medray", batched, 32, ns.embedder_duration, kind)
                emb[(kind, batched)] = r
                emit(
                    {
                        "bench": "embedder",
                        "input": kind,
                        "concurrency": 32,
                        "serve_batch": batched,
                        **r,
                    }
                )
        ray.shutdown()

        sampler.phase = "after"
        t_end = time.monotonic() + ns.downscale_wait
        while time.monotonic() < t_end:
            time.sleep(5)
            now = sampler.latest()
            if now and all(now.get(k, 0) <= before.get(k, 1) for k in now):
                break
        after = sampler.latest()
        emit(
            {
                "bench": "replicas",
                "phase": "after",
                "replicas": after,
                "waited_s": round(ns.downscale_wait - max(0.0, t_end - time.monotonic()), 0),
            }
        )

        summary: dict = {"bench": "summary", "load_avg_1m": round(os.getloadavg()[0], 2)}
        for endpoint in endpoints:
            hi, lo = max(concurrencies), min(concurrencies)
            g, b = results.get((endpoint, hi, "graph")), results.get((endpoint, hi, "baseline"))
            if g and b and b["throughput_rps"]:
                summary[f"{endpoint}_c{hi}_throughput_ratio"] = round(
                    g["throughput_rps"] / b["throughput_rps"], 2
                )
                summary[f"{endpoint}_c{hi}_graph_errors"] = g["errors"]
            g, b = results.get((endpoint, lo, "graph")), results.get((endpoint, lo, "baseline"))
            if g and b and b["p50_ms"]:
                summary[f"{endpoint}_c{lo}_p50_ratio"] = round(g["p50_ms"] / b["p50_ms"], 2)
        for kind in EMBEDDER_INPUTS:
            if emb[(kind, False)]["throughput_rps"]:
                summary[f"embedder_batch_speedup_c32_{kind}"] = round(
                    emb[(kind, True)]["throughput_rps"] / emb[(kind, False)]["throughput_rps"], 2
                )
        summary["autoscaled_up"] = any(during.get(k, 0) > before.get(k, 0) for k in during)
        summary["scaled_back_down"] = (
            all(after.get(k, 0) <= before.get(k, 0) for k in after) if after else False
        )
        emit(summary)
    finally:
        if sampler is not None:
            sampler.stop()
        if baseline is not None:
            baseline.terminate()
            try:
                baseline.wait(30)
            except subprocess.TimeoutExpired:
                baseline.kill()
        if not ns.keep_up:
            tear_down(state.dashboard_url, started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
