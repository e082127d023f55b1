"""Serve graph vs the single-process baseline, under bounded load on 127.0.0.1.

In one run, on the local cluster (started here unless one is up, and stopped again):

1. deploys the Serve app from ``serve_apps/configs/local.yaml`` and starts the
   single-process FastAPI + uvicorn baseline (``serve_apps.baseline``: the same HTTP API
   over the same plain classes), both against small Milvus collections indexed here;
2. for ``/v1/analyze`` (SSE, read to ``done``) and ``/v1/chat/completions`` (image +
   text) at concurrency 1, 8 and 32: p50 / p95 latency, throughput and errors for both,
   ``--repeats`` times each with the two sides alternating, every run of one
   (endpoint, concurrency) equally long on both sides (``--soak`` seconds for c=32
   analyze, where autoscaling shows, ``--duration`` for the rest); the summary
   compares medians of the repeats;
3. embedder throughput through deployment handles with and without ``@serve.batch`` at
   c=32, for report-length texts, short texts (sentence embedder) and images (CLIP),
   with the replica's model milliseconds per item (the rest is serving overhead);
4. replicas per deployment before, during and after the load (autoscaling).

Prints one JSON line per result and a summary line with the ratios. Load goes to
127.0.0.1 only and every loop is bounded in time and count.

    python -m benchmarks.serve                 # ~25 minutes on 2 cores
    python -m benchmarks.serve --duration 10 --soak 30 --concurrency 1,8 --repeats 1
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import os
import statistics
import subprocess
import sys
import time

from benchmarks.serve_load import (
    LOOPBACK,
    MAX_REQUESTS_PER_RUN,
    REPO,
    ReplicaSampler,
    _png_b64,
    emit,
    index_collections,
    replica_niceness,
    run_load,
    tear_down,
    wait_ready,
)

# ---------------------------------------------------------------------------- load


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


def compare_http(
    targets: dict[str, str],
    endpoints: list[str],
    concurrencies: list[int],
    ns: argparse.Namespace,
) -> dict[tuple[str, int, str], list[dict]]:
    """Every (endpoint, concurrency) ``ns.repeats`` times on both targets; runs of one
    pair are equally long on both sides (``ns.soak`` for the largest analyze
    concurrency, ``ns.duration`` otherwise) and who goes first alternates, so slow drift
    on a shared machine evens out. Emits one line per run."""
    results: dict[tuple[str, int, str], list[dict]] = {}
    names = list(targets)
    for endpoint in endpoints:
        for c in concurrencies:
            dur = ns.soak if (c == max(concurrencies) and endpoint == "analyze") else ns.duration
            for rep in range(ns.repeats):
                order = names if (c + rep) % 2 else names[::-1]
                for name in order:
                    r = asyncio.run(run_load(targets[name], endpoint, c, dur, ns.max_new_tokens))
                    results.setdefault((endpoint, c, name), []).append(r)
                    emit(
                        {
                            "bench": "http",
                            "endpoint": endpoint,
                            "concurrency": c,
                            "target": name,
                            "repeat": rep,
                            "duration_s": dur,
                            **r,
                        }
                    )
    return results


def _median(runs: list[dict], key: str) -> float | None:
    vals = [r[key] for r in runs if r.get(key) is not None]
    return statistics.median(vals) if vals else None


def http_summary(
    results: dict[tuple[str, int, str], list[dict]], endpoints: list[str], concurrencies: list[int]
) -> dict:
    """Graph / baseline ratios of the medians over repeats (throughput at the largest
    concurrency, p50 at the smallest), the per-repeat ratios beside them, and the
    medians themselves per (endpoint, concurrency, target)."""
    out: dict = {"medians": {}}
    for (endpoint, c, name), runs in sorted(results.items()):
        out["medians"][f"{endpoint}_c{c}_{name}"] = {
            k: _median(runs, k) for k in ("throughput_rps", "p50_ms", "p95_ms")
        } | {"errors": sum(r["errors"] for r in runs), "runs": len(runs)}
    hi, lo = max(concurrencies), min(concurrencies)
    for endpoint in endpoints:
        for c, key, label in ((hi, "throughput_rps", "throughput"), (lo, "p50_ms", "p50")):
            g, b = results.get((endpoint, c, "graph")), results.get((endpoint, c, "baseline"))
            if not (g and b) or not _median(b, key):
                continue
            out[f"{endpoint}_c{c}_{label}_ratio"] = round(_median(g, key) / _median(b, key), 2)
            out[f"{endpoint}_c{c}_{label}_ratio_per_repeat"] = [
                round(x[key] / y[key], 2) for x, y in zip(g, b, strict=True) if x[key] and y[key]
            ]
        if (endpoint, hi, "graph") in results:
            out[f"{endpoint}_c{hi}_graph_errors"] = sum(
                r["errors"] for r in results[(endpoint, hi, "graph")]
            )
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=20, help="seconds per load run")
    p.add_argument(
        "--soak",
        type=float,
        default=60,
        help="seconds of each side's analyze run at the largest concurrency (autoscaling)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per side and load point (medians)")
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
    if ns.repeats < 1:
        p.error("--repeats must be at least 1")
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

        results = compare_http({"baseline": base, "graph": graph}, endpoints, concurrencies, ns)
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

        summary: dict = {
            "bench": "summary",
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "repeats": ns.repeats,
            **http_summary(results, endpoints, concurrencies),
        }
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
