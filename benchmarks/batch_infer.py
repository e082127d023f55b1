"""Benchmark of batch inference: 2 model actors of 1 CPU each vs 1 actor of 1 CPU.

    python -m benchmarks.batch_infer                       # from the repo root
    python -m benchmarks.batch_infer --rows 96 --max-new-tokens 96 --repeats 3
    python -m benchmarks.batch_infer --rows 8 --max-new-tokens 16 --repeats 1   # smoke test

Prints one JSON line per timed run and a last line with the ratio (acceptance: >= 1.6).

Same split, same run, same work: ``--rows`` VQA rows of ``--split`` of the preprocessed
output ``--data`` (default ``$MEDRAY_HOME/data/synthetic``; make it with ``python -m
jobs.preprocess --config jobs/configs/preprocess_synthetic.yaml``) are read and
materialized once, then answered by the job's own actor class
(:class:`medray.infer.predictor.VQAPredictor`: image decode, the tiny reasoner generating
its JSON answer greedily for ``--max-new-tokens`` tokens, parsing, confidence) through
``map_batches`` with an actor pool of 1 actor (``num_cpus=1``) and of 2 actors
(``num_cpus=1`` each), torch threads pinned to 1 per actor. Ray runs locally with
``--num-cpus`` CPUs (default 2, the two actors' worth) unless ``RAY_ADDRESS`` is set.

What is timed: rows / (end of the last batch - start of the first batch), from timestamps
the actors record around each batch, so actor start-up and model loading (the same in both
and paid once per job) are not counted; the end-to-end wall time of each run is printed
beside it. Each configuration is warmed up once, then the two alternate ``--repeats``
times; the ratio of the median rows/s counts, the per-repeat ratios beside it (the machine
is shared and noisy). Run it on an
otherwise idle machine with at least 2 free cores: a ratio measured while other jobs use
the cores says more about them than about Ray.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections import Counter

import pyarrow as pa
import pyarrow.compute as pc

from medray.infer.predictor import VQAPredictor


class TimedPredictor(VQAPredictor):
    """The job's predictor, plus the batch's start and end times (epoch seconds)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        t0 = time.time()
        out = super().__call__(batch)
        t1 = time.time()
        out = out.select(["sample_id", "error", "node"])
        n = out.num_rows
        out = out.append_column("t0", pa.array([t0] * n)).append_column("t1", pa.array([t1] * n))
        return out.append_column("pid", pa.array([os.getpid()] * n))


def timed_run(ds, models, actors: int, args) -> dict:
    import ray

    from jobs.batch_infer import ActorSettings, configure_pool, tasks_in_flight

    # The job's pool settings: all actors up before the first batch, and as many batches
    # queued per actor as the job would queue for this many batches.
    pool = ActorSettings(concurrency=actors)
    ds = configure_pool(ds, pool)
    in_flight = args.max_tasks_in_flight or tasks_in_flight(pool, ds.num_blocks())

    t0 = time.perf_counter()
    res = ds.map_batches(
        TimedPredictor,
        fn_constructor_kwargs={
            "models": models,
            "max_new_tokens": args.max_new_tokens,
            "num_cpus": 1,
        },
        batch_size=args.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=in_flight),
        num_cpus=1,
    ).to_arrow_refs()
    table = pa.concat_tables(ray.get(res))
    wall = time.perf_counter() - t0
    n = table.num_rows
    span = pc.max(table["t1"]).as_py() - pc.min(table["t0"]).as_py()
    # Time inside the actors' batches (one entry per batch), against actors x span: how
    # much of the span the actors computed rather than waited for their next batch.
    cols = (table[c].to_pylist() for c in ("pid", "t0", "t1"))
    batches = set(zip(*cols, strict=True))
    in_batches = sum(b - a for _, a, b in batches)
    return {
        "actors": actors,
        "cpus_per_actor": 1,
        "rows": n,
        "errors": int(pc.sum(pc.not_equal(table["error"], "")).as_py() or 0),
        "rows_per_actor": sorted(Counter(table["pid"].to_pylist()).values()),
        "rows_per_s": round(n / span, 3),
        "busy_seconds": round(span, 3),
        "batches": len(batches),
        "actor_utilisation": round(in_batches / (actors * span), 3) if span > 0 else None,
        "wall_seconds": round(wall, 3),
        "max_new_tokens": args.max_new_tokens,
        "batch_size": args.batch_size,
        "max_tasks_in_flight_per_actor": in_flight,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="$MEDRAY_HOME/data/synthetic")
    ap.add_argument("--split", default="test")
    ap.add_argument("--rows", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-new-tokens", type=int, default=96)
    ap.add_argument("--model", default="tiny-qwen2-vl")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--num-cpus", type=int, default=2)
    ap.add_argument(
        "--max-tasks-in-flight",
        type=int,
        default=0,
        help="batches queued per actor (default: the job's actors.max_tasks_in_flight)",
    )
    args = ap.parse_args()

    import ray

    from jobs.batch_infer import BatchInferConfig, build_inputs, resolve_models
    from medray.config import from_dict

    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    else:
        ray.init(address="local", num_cpus=args.num_cpus, log_to_driver=False)
    cfg = from_dict(
        BatchInferConfig,
        {
            "input": {"path": args.data, "split": args.split, "limit": args.rows},
            "models": [{"label": "base", "model": args.model}],
        },
    )
    models = resolve_models(cfg)
    inputs = build_inputs(cfg)
    # Read once, one block per batch: both contenders answer the same blocks.
    ds = inputs.dataset.repartition(target_num_rows_per_block=args.batch_size).materialize()

    warm = ds.limit(min(args.rows, 2 * args.batch_size)).materialize()
    for actors in (1, 2):
        timed_run(warm, models, actors, args)  # worker processes, imports, model files cached
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for rep in range(args.repeats):
        for actors in (1, 2):
            r = timed_run(ds, models, actors, args)
            r["repeat"] = rep
            r["load_avg_1m"] = round(os.getloadavg()[0], 2)
            print(json.dumps({"benchmark": "batch_infer", **r}), flush=True)
            runs[actors].append(r)
    med = {a: statistics.median(r["rows_per_s"] for r in rs) for a, rs in runs.items()}
    ratio = med[2] / med[1]
    print(
        json.dumps(
            {
                "benchmark": "batch_infer",
                "result": "ratio",
                "rows": inputs.n_rows,
                "statistic": "median of repeats",
                "one_actor_rows_per_s": round(med[1], 3),
                "two_actors_rows_per_s": round(med[2], 3),
                "ratio_2_vs_1": round(ratio, 3),
                "ratio_per_repeat": [
                    round(b["rows_per_s"] / a["rows_per_s"], 3)
                    for a, b in zip(runs[1], runs[2], strict=True)
                ],
                "acceptance": ">= 1.6",
                "pass": ratio >= 1.6,
                "cpu_count": os.cpu_count(),
            }
        ),
        flush=True,
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
