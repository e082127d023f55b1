"""Benchmark of the preprocess job: Ray Data vs a single-process loop, and memory vs size.

    python benchmarks/preprocess.py                     # all: throughput + memory
    python benchmarks/preprocess.py --skip-memory       # throughput only
    python benchmarks/preprocess.py --n 3000 --mem-sizes 5000,20000 --data-dir /tmp/bench

Prints one JSON line per result.

Throughput. Input: ``--n`` synthetic MIMIC-CXR-JPG images (512x512 JPEGs with reports,
``medray data synth``), generated once into ``--data-dir``. Both contenders do the same
work with the same functions: list the records, read each image and report, decode,
resize to 224, encode, hash, validate, write Parquet shards + quarantine, dedup, commit.
The Ray Data job (``jobs.preprocess.run``) runs on a fresh local Ray with
``num_cpus=2`` (``ray.init(address="local", num_cpus=2)``); the loop
(:func:`single_process`) calls :func:`medray.data.transform.process_record` and
:func:`medray.data.sink.write_block` in one process. Each is warmed up once on a small
subset (Ray worker start-up and imports are not what is measured), then timed ``--repeats``
times in alternation; the ratio of the median times counts, the per-repeat ratios beside it
(the machine is shared and noisy).
Result: rows/s of each and their ratio (Ray / loop). As a reference for what the two
cores allow at that moment, the same chunks are also run on a plain 2-process
``multiprocessing`` pool (no Ray): its ratio to the loop is the machine's ceiling, which
on a shared 2-vCPU VM is well below 2. ``--quiet-load X`` waits before each timed run
until the 1-minute load average is below X (other people's jobs share the machine).

Memory. The job runs on ``--mem-sizes`` images (default 5,000 and 20,000), each size in a
fresh subprocess with its own local Ray (``num_cpus=2``), so nothing carries over. A
sampler thread reads, every 0.2 s, the resident set size (RSS) of the job's processes:
the driver plus every Ray worker process it started (descendants of the driver whose
command line starts with ``ray::``, excluding Ray's own agents: the dashboard and
runtime-env agents, and the GCS/raylet system processes, which are the cluster's, not
the job's). Peak = the largest per-sample sum. RSS counts shared pages (the object
store's shared memory, shared libraries) once per process that maps them, so the sum
over-states the total; the proportional set size (PSS, shared pages divided among
their users) is reported beside it. Result: peak RSS (and PSS) at each size and the
ratio largest / smallest.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def dataset(data_dir: Path, n: int, size: int) -> Path:
    """Synthetic MIMIC-CXR-JPG with n images of size x size, generated once."""
    from medray.data.synth import ensure_synthetic

    root = data_dir / f"mimic-{n}-{size}"
    t = time.perf_counter()
    if ensure_synthetic("mimic-cxr", root, n, seed=0, image_size=size, workers=2):
        emit(
            step="generate",
            n=n,
            size=size,
            seconds=round(time.perf_counter() - t, 1),
            path=str(root),
        )
    return root


def job_config(root: Path, out: Path, limit: int = 0, **kw):
    from medray.config import from_dict
    from medray.data.config import PreprocessConfig

    return from_dict(
        PreprocessConfig,
        {
            "sources": [{"kind": "mimic-cxr", "path": str(root), "limit": limit}],
            "output": str(out),
            **kw,
        },
    )


def single_process(cfg) -> dict:
    """The baseline: the job's work in one process, chunk by chunk, without Ray."""
    import json as _json

    from medray.data import finalize, output
    from medray.data.collect import collect_records
    from medray.data.sink import write_block
    from medray.data.transform import process_record, rows_to_table

    collected = collect_records(cfg)
    staged = output.begin(str(cfg.output), cfg.overwrite)
    results = []
    step = cfg.rows_per_block
    for k in range(0, len(collected.items), step):
        cache: dict = {}
        rows = [
            process_record(_json.loads(s), cfg.image, -1, cache)
            for s in collected.items[k : k + step]
        ]
        results.append(
            write_block(
                rows_to_table(rows, "local"), staged.staging, f"{k:07d}", cfg.compression
            ).as_dict()
        )
    merged = finalize.merge_results(results)
    drops, dups = finalize.find_duplicates(merged.index)
    finalize.drop_rows(staged.staging, drops, merged, cfg.compression)
    finalize.write_reports(staged.staging, merged, dups)
    counts = {
        "in": len(collected.items),
        "written": sum(sum(f.values()) for f in merged.files.values()),
    }
    output.commit(staged, finalize.manifest(merged, counts))
    return counts


def _pool_chunk(job: tuple) -> dict:
    import json as _json

    from medray.data.sink import write_block
    from medray.data.transform import process_record, rows_to_table

    items, image, staging, tag, compression = job
    cache: dict = {}
    rows = [process_record(_json.loads(s), image, -1, cache) for s in items]
    return write_block(rows_to_table(rows, "pool"), staging, tag, compression).as_dict()


def two_processes(cfg, pool) -> dict:
    """The ceiling: the loop's chunks spread over a 2-process pool, no Ray."""
    from medray.data import finalize, output
    from medray.data.collect import collect_records

    collected = collect_records(cfg)
    staged = output.begin(str(cfg.output), cfg.overwrite)
    step = cfg.rows_per_block
    jobs = [
        (collected.items[k : k + step], cfg.image, staged.staging, f"{k:07d}", cfg.compression)
        for k in range(0, len(collected.items), step)
    ]
    merged = finalize.merge_results(pool.map(_pool_chunk, jobs, chunksize=1))
    drops, dups = finalize.find_duplicates(merged.index)
    finalize.drop_rows(staged.staging, drops, merged, cfg.compression)
    finalize.write_reports(staged.staging, merged, dups)
    counts = {
        "in": len(collected.items),
        "written": sum(sum(f.values()) for f in merged.files.values()),
    }
    output.commit(staged, finalize.manifest(merged, counts))
    return counts


def throughput(args) -> None:
    from multiprocessing import get_context

    import ray

    from jobs.preprocess import run

    root = dataset(args.data_dir, args.n, args.size)
    pool = get_context("spawn").Pool(2)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    work = Path(tempfile.mkdtemp(prefix="medray-bench-"))
    try:
        # Warm-up: Ray workers started and imports done; the loop's imports and page cache.
        run(job_config(root, work / "warm-ray", limit=128, num_blocks=2))
        single_process(job_config(root, work / "warm-loop", limit=128))
        two_processes(job_config(root, work / "warm-pool", limit=128), pool)
        times: dict[str, list[float]] = {"ray": [], "loop": [], "pool": []}
        rows = 0
        for i in range(args.repeats):
            wait_quiet(args.quiet_load)
            t = time.perf_counter()
            s = run(job_config(root, work / f"ray-{i}", num_blocks=args.num_blocks))
            times["ray"].append(time.perf_counter() - t)
            rows = s["counts"]["in"]
            wait_quiet(args.quiet_load)
            t = time.perf_counter()
            c = single_process(job_config(root, work / f"loop-{i}"))
            times["loop"].append(time.perf_counter() - t)
            assert c["in"] == rows and c["written"] == s["counts"]["written"]
            wait_quiet(args.quiet_load)
            t = time.perf_counter()
            two_processes(job_config(root, work / f"pool-{i}"), pool)
            times["pool"].append(time.perf_counter() - t)
        med = {k: statistics.median(v) for k, v in times.items()}
        emit(
            result="throughput",
            images=rows,
            image_size=args.size,
            cpus=2,
            ray_seconds=[round(x, 2) for x in times["ray"]],
            loop_seconds=[round(x, 2) for x in times["loop"]],
            two_process_seconds=[round(x, 2) for x in times["pool"]],
            ray_rows_per_s=round(rows / med["ray"], 1),
            loop_rows_per_s=round(rows / med["loop"], 1),
            num_blocks=s["num_blocks"],
            load_average=os.getloadavg()[0],
        )
        # Ratios of the medians over repeats; the per-repeat ratios show the spread.
        emit(
            result="throughput_ratio",
            statistic="median of repeats",
            ray_over_loop=round(med["loop"] / med["ray"], 2),
            two_processes_over_loop=round(med["loop"] / med["pool"], 2),
            ray_over_loop_per_repeat=[
                round(a / b, 2) for a, b in zip(times["loop"], times["ray"], strict=True)
            ],
        )
    finally:
        ray.shutdown()
        pool.terminate()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def wait_quiet(threshold: float, limit_s: float = 120.0) -> None:
    """On a shared machine, wait (up to limit_s) until the 1-minute load average is low."""
    if threshold <= 0:
        return
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] > threshold and time.monotonic() < deadline:
        time.sleep(2)


def job_processes():
    import psutil

    me = psutil.Process()
    procs = [me]
    for p in me.children(recursive=True):
        try:
            cmd = " ".join(p.cmdline())
        except psutil.Error:
            continue
        if cmd.startswith("ray::") and not cmd.startswith(
            ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
        ):
            procs.append(p)
    return procs


def memory_run(args) -> None:
    """One size, in this (fresh) process: run the job, sample the job's memory."""
    import psutil
    import ray

    from jobs.preprocess import run

    root = dataset(args.data_dir, args.memory_run, args.size)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    peak = {"rss": 0, "pss": 0, "procs": 0}
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            rss = pss = 0
            procs = job_processes()
            for p in procs:
                try:
                    info = p.memory_full_info()
                except psutil.Error:
                    continue
                rss += info.rss
                pss += info.pss
            if rss > peak["rss"]:
                peak.update(rss=rss, procs=len(procs))
            peak["pss"] = max(peak["pss"], pss)
            stop.wait(0.2)

    out = Path(tempfile.mkdtemp(prefix="medray-bench-mem-")) / "out"
    run(job_config(root, out.parent / "warm", limit=64, num_blocks=2))  # start the workers
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t = time.perf_counter()
    s = run(job_config(root, out))
    stop.set()
    thread.join()
    print(
        json.dumps(
            {
                "images": s["counts"]["in"],
                "seconds": round(time.perf_counter() - t, 1),
                "peak_rss_mb": round(peak["rss"] / 2**20, 1),
                "peak_pss_mb": round(peak["pss"] / 2**20, 1),
                "processes": peak["procs"],
                "num_blocks": s["num_blocks"],
            }
        ),
        flush=True,
    )
    ray.shutdown()


def memory(args) -> None:
    results = []
    for n in args.mem_sizes:
        dataset(args.data_dir, n, args.size)  # generate outside the measured process
        cmd = [
            sys.executable,
            __file__,
            "--memory-run",
            str(n),
            "--size",
            str(args.size),
            "--data-dir",
            str(args.data_dir),
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=os.environ)
        if res.returncode != 0:
            raise SystemExit(f"memory run n={n} failed:\n{res.stderr[-3000:]}")
        r = json.loads(res.stdout.strip().splitlines()[-1])
        emit(result="memory", **r)
        results.append(r)
    lo, hi = results[0], results[-1]
    emit(
        result="memory_ratio",
        sizes=[lo["images"], hi["images"]],
        peak_rss_ratio=round(hi["peak_rss_mb"] / lo["peak_rss_mb"], 3),
        peak_pss_ratio=round(hi["peak_pss_mb"] / lo["peak_pss_mb"], 3),
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=3000, help="images for the throughput comparison")
    p.add_argument("--size", type=int, default=512, help="edge of the generated JPEGs")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--num-blocks", type=int, default=0, help="Ray Data blocks (0: the job's default)"
    )
    p.add_argument(
        "--mem-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[5000, 20000]
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(os.environ.get("MEDRAY_HOME", Path.home() / ".medray")) / "bench",
    )
    p.add_argument(
        "--quiet-load",
        type=float,
        default=0.0,
        help="before each timed run, wait (<=120 s) until the 1-min load average is below this",
    )
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--memory-run", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if args.memory_run:
        memory_run(args)
        return
    args.data_dir.mkdir(parents=True, exist_ok=True)
    if not args.skip_throughput:
        throughput(args)
    if not args.skip_memory:
        memory(args)


if __name__ == "__main__":
    main()
