"""Where the serving path's decode time goes: ``Reasoner.stream_many`` against plain
``generate`` on the same model and inputs, one difference at a time.

    python -m benchmarks.gpu_serve_overhead                       # qwen2-vl-2b-random, GPU
    python -m benchmarks.gpu_serve_overhead --vlm tiny-qwen2-vl --device cpu --tokens 8

One JSON line per variant (milliseconds per decode step, from ``--tokens`` new tokens
minus a one-token run of the same call), then the profile of the generating thread and
of the consuming thread during one ``stream_many`` call (top functions by own time).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import statistics
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

import torch

from benchmarks import gpu_parts as gp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--vlm", default="qwen2-vl-2b-random")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=32)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--batches", default="1,32")
    args = ap.parse_args(argv)

    from transformers import StoppingCriteriaList

    from medray.contracts import reasoner as reasoner_contract
    from medray.models.generate import encode
    from medray.serving.reasoner import (
        GenerationParams,
        GenRequest,
        Reasoner,
        _BatchStreamer,
        _SeqState,
    )

    r = Reasoner(args.vlm, device=args.device)
    image = gp.test_image(448)
    msgs = reasoner_contract.messages(gp.QUESTION, True)
    prompt = r.processor.apply_chat_template(msgs, add_generation_prompt=True)
    inputs = {}
    for b in (int(x) for x in args.batches.split(",")):
        inputs[b] = encode(r.processor, [prompt] * b, [image] * b, args.device)

    def gen(b: int, n: int, **kw) -> None:
        with torch.inference_mode():
            r.base.generate(**inputs[b], max_new_tokens=n, min_new_tokens=n, do_sample=False, **kw)

    def never(ids, scores, **kw):
        return torch.zeros(ids.shape[0], dtype=torch.bool, device=ids.device)

    def in_thread(fn: Callable[[], None]) -> None:
        t = threading.Thread(target=fn)
        t.start()
        t.join()

    def consumed(b: int, n: int) -> None:
        s = _BatchStreamer()
        t = threading.Thread(target=lambda: gen(b, n, streamer=s))
        t.start()
        while s.queue.get() is not None:
            pass
        t.join()

    def served(b: int, n: int) -> None:
        for _ in r.stream_many([GenRequest(msgs, [image], GenerationParams(n))] * b):
            pass

    pool = ThreadPoolExecutor(1)

    def no_consumer_work(b: int, n: int) -> None:
        add = _SeqState.add
        _SeqState.add = lambda self, token: []
        try:
            served(b, n)
        finally:
            _SeqState.add = add

    variants: dict[str, Callable[[int, int], None]] = {
        "generate": lambda b, n: gen(b, n),
        "generate+streamer": lambda b, n: gen(b, n, streamer=_BatchStreamer()),
        "generate+criterion": lambda b, n: gen(
            b, n, stopping_criteria=StoppingCriteriaList([never])
        ),
        "generate_in_new_thread": lambda b, n: in_thread(lambda: gen(b, n)),
        "generate_in_pool_thread": lambda b, n: pool.submit(gen, b, n).result(),
        "thread+streamer+queue_consumer": consumed,
        "stream_many": served,
        "stream_many_no_consumer_work": no_consumer_work,
        "stream_many_switch_0.5ms": lambda b, n: switched(5e-4, lambda: served(b, n)),
        "stream_many_1_torch_thread": lambda b, n: threads(1, lambda: served(b, n)),
    }
    big = ("generate", "stream_many")
    print(json.dumps({"bench": "serve_overhead_env", **environment()}), flush=True)
    for b in inputs:
        for name, fn in variants.items():
            if b > 1 and name not in big:
                continue
            fn(b, 2)
            one = statistics.median(time_it(partial(fn, b, 1), args.device) for _ in range(2))
            full = [time_it(partial(fn, b, args.tokens), args.device) for _ in range(args.reps)]
            step = (statistics.median(full) - one) / (args.tokens - 1)
            row = {"variant": name, "batch": b, "ms_per_step": round(1000 * step, 2)}
            row["first_token_ms"] = round(1000 * one, 1)
            print(json.dumps({"bench": "serve_overhead", **row}), flush=True)
    profile_threads(lambda: served(1, args.tokens))
    return 0


def environment() -> dict:
    """What could make one thread's work slower than another's."""
    import os

    return {
        "torch_threads": torch.get_num_threads(),
        "switch_interval_s": sys.getswitchinterval(),
        "cpus": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "threads": [t.name for t in threading.enumerate()],
        "omp_env": {k: v for k, v in os.environ.items() if k.startswith(("OMP", "MKL", "GOMP"))},
        "parallel": torch.__config__.parallel_info().splitlines()[:6],
        "python": sys.version.split()[0],
    }


def time_it(fn: Callable[[], None], device: str) -> float:
    gp.sync(device)
    t0 = time.perf_counter()
    fn()
    gp.sync(device)
    return time.perf_counter() - t0


def switched(interval: float, fn: Callable[[], None]) -> None:
    old = sys.getswitchinterval()
    sys.setswitchinterval(interval)
    try:
        fn()
    finally:
        sys.setswitchinterval(old)


def threads(n: int, fn: Callable[[], None]) -> None:
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        fn()
    finally:
        torch.set_num_threads(old)


def profile_threads(fn: Callable[[], None]) -> None:
    """cProfile of the consuming (this) thread and of every thread started meanwhile."""
    profiles: list[cProfile.Profile] = []
    run = threading.Thread.run

    def profiled_run(self):
        p = cProfile.Profile()
        profiles.append(p)
        p.enable()
        try:
            run(self)
        finally:
            p.disable()

    main_profile = cProfile.Profile()
    threading.Thread.run = profiled_run
    try:
        main_profile.enable()
        fn()
        main_profile.disable()
    finally:
        threading.Thread.run = run
    for name, p in [("consumer", main_profile)] + [("generator", p) for p in profiles]:
        out = io.StringIO()
        stats = pstats.Stats(p, stream=out)
        print(f"--- profile {name}: {stats.total_tt:.3f}s", flush=True)
        stats.sort_stats("tottime").print_stats(14)
        lines = [ln for ln in out.getvalue().splitlines() if ln.strip()][-15:]
        print("\n".join(ln[:160] for ln in lines), flush=True)


if __name__ == "__main__":
    sys.exit(main())
