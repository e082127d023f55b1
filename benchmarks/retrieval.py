"""Vector search through the Milvus server vs FAISS HNSW in-process, same vectors, same run.

    python benchmarks/retrieval.py [--sizes 10000 50000 100000] [--dim 512] [--queries 200]

Vectors have the structure of real embeddings: a seeded Gaussian mixture (200 clusters)
on a 32-dimensional subspace of R^dim, plus small isotropic noise, L2-normalised
(uniform random high-dimensional vectors defeat every ANN index and measure nothing).
For each size the script starts its own ``milvus-lite server`` (as ``medray cluster up``
does), inserts with HNSW (M and efConstruction from ``MilvusSettings``), flushes, and
measures: index build (Milvus Lite builds lazily on the first search after a flush), the
warm-up the index job does (flush, then wait until Milvus reports the index built; on
Milvus Lite, which builds in the background, that wait returns at once) and the first query
after it against the steady p50 at the first ``ef``,
recall@10 against exact search at several ``ef``, single-query latency (p50/p95) and
batched throughput; then FAISS ``IndexHNSWFlat`` with the same parameters. One JSON line
per result; ratios compare Milvus with FAISS measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def structured_vectors(
    n: int, dim: int, seed: int, clusters: int = 200, rank: int = 32
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    basis, _ = np.linalg.qr(np.random.default_rng(1234).normal(size=(dim, rank)))
    centers = np.random.default_rng(99).normal(size=(clusters, rank)) * 1.0
    labels = rng.integers(clusters, size=n)
    low = centers[labels] + 0.35 * rng.normal(size=(n, rank))
    x = low @ basis.T + 0.01 * rng.normal(size=(n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top_k(data: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    scores = queries @ data.T
    return np.argsort(-scores, axis=1)[:, :k]


def recall(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def start_milvus(data_dir: Path, port: int) -> subprocess.Popen:
    from medray.cluster.milvus_server import milvus_check

    exe = Path(sys.executable).parent / "milvus-lite"
    proc = subprocess.Popen(
        [
            str(exe),
            "server",
            "--data-dir",
            str(data_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    err = milvus_check(f"http://127.0.0.1:{port}", timeout=60)
    if err:
        proc.kill()
        raise RuntimeError(f"milvus-lite did not start: {err}")
    return proc


def bench_milvus(data, queries, truth, efs, k, port, batch):
    from pymilvus import DataType, MilvusClient

    from medray.retrieval.lifecycle import wait_for_index
    from medray.retrieval.store import MilvusSettings

    settings = MilvusSettings()
    workdir = Path(tempfile.mkdtemp(prefix="medray-bench-milvus-"))
    proc = start_milvus(workdir, port)
    try:
        client = MilvusClient(uri=f"http://127.0.0.1:{port}", timeout=600)
        schema = MilvusClient.create_schema(auto_id=False)
        schema.add_field("id", DataType.INT64, is_primary=True)
        schema.add_field("vec", DataType.FLOAT_VECTOR, dim=data.shape[1])
        params = client.prepare_index_params()
        params.add_index(
            "vec",
            index_type="HNSW",
            metric_type="COSINE",
            params={"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction},
        )
        client.create_collection("bench", schema=schema, index_params=params)
        t0 = time.perf_counter()
        for i in range(0, len(data), 5000):
            client.insert(
                "bench",
                [{"id": i + j, "vec": v.tolist()} for j, v in enumerate(data[i : i + 5000])],
            )
        client.flush("bench")
        insert_s = time.perf_counter() - t0

        def search(qs, ef):
            res = client.search(
                "bench", data=[q.tolist() for q in qs], anns_field="vec", limit=k,
                search_params={"metric_type": "COSINE", "params": {"ef": ef}},
            )  # fmt: skip
            return [[h["id"] for h in hits] for hits in res]

        t0 = time.perf_counter()
        search(queries[:1], efs[0])  # the lazy index build happens here
        build_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        search(queries[1:2], efs[0])
        first_after_build_s = time.perf_counter() - t0
        # What the index job does before it reports done (CaseStore.warm): flush and wait
        # until Milvus reports the index built (no release: see medray.retrieval.lifecycle); then the
        # first query of a user.
        t0 = time.perf_counter()
        client.flush("bench")
        wait_for_index(client, "bench", settings.index_timeout_s)
        warm_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        search(queries[2:3], efs[0])
        first_after_warm_s = time.perf_counter() - t0
        out = {
            "insert_s": insert_s,
            "index_build_s": build_s,
            "first_query_s": first_after_build_s,
            "warm_s": warm_s,
            "first_query_after_warm_s": first_after_warm_s,
            "by_ef": {},
        }
        for ef in efs:
            lat = []
            found = []
            for q in queries:
                t = time.perf_counter()
                found.extend(search([q], ef))
                lat.append(time.perf_counter() - t)
            t = time.perf_counter()
            for i in range(0, len(queries), batch):
                search(queries[i : i + batch], ef)
            batched_qps = len(queries) / (time.perf_counter() - t)
            out["by_ef"][ef] = {
                "recall@10": recall(found, truth),
                "p50_ms": 1000 * float(np.percentile(lat, 50)),
                "p95_ms": 1000 * float(np.percentile(lat, 95)),
                "batched_qps": batched_qps,
            }
        client.close()
        return out
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(workdir, ignore_errors=True)


def bench_faiss(data, queries, truth, efs, k, batch):
    import faiss

    from medray.retrieval.store import MilvusSettings

    settings = MilvusSettings()
    index = faiss.IndexHNSWFlat(data.shape[1], settings.hnsw_m, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = settings.hnsw_ef_construction
    t0 = time.perf_counter()
    index.add(data)
    build_s = time.perf_counter() - t0
    out = {"index_build_s": build_s, "by_ef": {}}
    for ef in efs:
        index.hnsw.efSearch = ef
        lat, found = [], []
        for q in queries:
            t = time.perf_counter()
            _, ids = index.search(q[None, :], k)
            lat.append(time.perf_counter() - t)
            found.append(ids[0].tolist())
        t = time.perf_counter()
        for i in range(0, len(queries), batch):
            index.search(queries[i : i + batch], k)
        out["by_ef"][ef] = {
            "recall@10": recall(found, truth),
            "p50_ms": 1000 * float(np.percentile(lat, 50)),
            "p95_ms": 1000 * float(np.percentile(lat, 95)),
            "batched_qps": len(queries) / (time.perf_counter() - t),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000])
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--efs", type=int, nargs="+", default=[64, 128, 256])
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--port", type=int, default=19650)
    args = ap.parse_args()
    k = 10
    queries = structured_vectors(args.queries, args.dim, seed=7)
    sample = structured_vectors(2000, args.dim, seed=3)
    sims = np.sort(queries @ sample.T, axis=1)[:, ::-1]
    emit(bench="retrieval", vectors="structure", top1_cos=round(float(sims[:, 0].mean()), 3),
         median_cos=round(float(np.median(sims)), 3))  # fmt: skip
    for n in args.sizes:
        data = structured_vectors(n, args.dim, seed=0)
        truth = exact_top_k(data, queries, k)
        faiss_r = bench_faiss(data, queries, truth, args.efs, k, args.batch)
        milvus_r = bench_milvus(data, queries, truth, args.efs, k, args.port, args.batch)
        emit(
            bench="retrieval",
            n=n,
            dim=args.dim,
            engine="faiss-hnsw",
            index_build_s=round(faiss_r["index_build_s"], 2),
        )
        emit(
            bench="retrieval", n=n, dim=args.dim, engine="milvus-lite", insert_s=round(milvus_r["insert_s"], 2),
            index_build_s=round(milvus_r["index_build_s"], 2),
            first_query_after_build_ms=round(1000 * milvus_r["first_query_s"], 1),
            warm_s=round(milvus_r["warm_s"], 1),
            first_query_after_warm_ms=round(1000 * milvus_r["first_query_after_warm_s"], 1),
            first_after_warm_over_steady_p50=round(
                1000 * milvus_r["first_query_after_warm_s"] / milvus_r["by_ef"][args.efs[0]]["p50_ms"], 2
            ),
        )  # fmt: skip
        for ef in args.efs:
            m, f = milvus_r["by_ef"][ef], faiss_r["by_ef"][ef]
            emit(
                bench="retrieval", n=n, ef=ef,
                milvus_recall10=round(m["recall@10"], 4), faiss_recall10=round(f["recall@10"], 4),
                milvus_p50_ms=round(m["p50_ms"], 2), milvus_p95_ms=round(m["p95_ms"], 2),
                faiss_p50_ms=round(f["p50_ms"], 3), faiss_p95_ms=round(f["p95_ms"], 3),
                milvus_batched_qps=round(m["batched_qps"], 1), faiss_batched_qps=round(f["batched_qps"], 1),
                p50_ratio_milvus_over_faiss=round(m["p50_ms"] / max(f["p50_ms"], 1e-6), 1),
            )  # fmt: skip


if __name__ == "__main__":
    main()
