"""Per-rank model + optimizer state bytes under DeepSpeed ZeRO-3 vs ZeRO-0, at 2 ranks.

    python -m benchmarks.zero_memory                        # tiny-qwen2-vl, fp32 and bf16
    python -m benchmarks.zero_memory --model tiny-lm --dtypes fp32 --ranks 2

For each ZeRO stage (0, then 3) and each dtype, ``--ranks`` processes (gloo, CPU) build the
model inside DeepSpeed's config context (as the training jobs do), wrap it with
``deepspeed.initialize`` and an AdamW optimizer, run one forward/backward/step on a random
batch (so that the gradients and Adam moments exist) and then count, on every rank, the
bytes of the tensors that rank holds:

* model parameters: the rank's own partition under ZeRO-3 (``param.ds_tensor``), the whole
  parameter otherwise;
* the optimizer's parameters (fp32 master copies where DeepSpeed keeps them: the flat
  partitions under ZeRO-3, the bf16 optimizer's fp32 groups) and their gradients;
* the optimizer state (Adam's ``exp_avg`` / ``exp_avg_sq``, ``step``).

Memory is counted by address range (a master copy that *is* the model parameter counts
once; views into one flat buffer add up). Gradients are counted where they still exist
after the step (DeepSpeed frees or zeroes most of them). This is exact accounting of what DeepSpeed allocates for the model and optimizer,
not process RSS (which mixes in libraries, the allocator and activations). Prints one JSON
line per (stage, dtype) with the largest per-rank total and a final line per dtype with
the ratio ZeRO-3 / ZeRO-0; the goal is <= 0.55 at 2 ranks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import tempfile
from pathlib import Path
from typing import Any


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bytes(t) -> int:
    return t.numel() * t.element_size()


class _Memory:
    """Bytes of distinct memory: tensors are counted by the address range they cover, so
    views into one flat buffer (ZeRO's partitions) add up and aliases count once."""

    def __init__(self) -> None:
        self.ranges: list[tuple[int, int, str]] = []

    def add(self, t, kind: str) -> None:
        import torch

        if isinstance(t, torch.Tensor) and t.numel():
            start = t.data_ptr()
            self.ranges.append((start, start + _bytes(t), kind))

    def totals(self) -> dict[str, int]:
        out = {"params": 0, "grads": 0, "master": 0, "optimizer_state": 0}
        end = -1
        order = {k: i for i, k in enumerate(out)}  # an alias counts as the first kind listed
        for start, stop, kind in sorted(self.ranges, key=lambda r: (r[0], -r[1], order[r[2]])):
            if stop <= end:
                continue  # already counted (an alias or a view inside a counted range)
            out[kind] += stop - max(start, end)
            end = max(end, stop)
        out["total"] = sum(out.values())
        return out


def _count(engine) -> dict[str, int]:
    mem = _Memory()
    for p in engine.module.parameters():
        mem.add(p.ds_tensor if hasattr(p, "ds_tensor") else p.data, "params")
        mem.add(p.grad, "grads")
    opt = engine.optimizer
    base = getattr(opt, "optimizer", opt)
    for group in base.param_groups:
        for p in group["params"]:
            mem.add(p.data, "master")
            mem.add(p.grad, "grads")
    for st in base.state.values():
        for v in st.values():
            mem.add(v, "optimizer_state")
    # DeepSpeed's own flat buffers (fp32 master partitions, bf16 optimizer groups, gradient
    # accumulators) where the wrapper keeps them outside the base optimizer.
    for name in (
        "fp32_partitioned_groups_flat",
        "fp32_groups_flat_partition",
        "bf16_groups_flat",
        "fp32_groups_gradient_flat_partition",
        "averaged_gradients",
    ):
        holder = getattr(opt, name, None)
        items = holder.values() if isinstance(holder, dict) else (holder or [])
        kind = "grads" if "grad" in name else ("params" if name.startswith("bf16") else "master")
        for g in items:
            for t in g if isinstance(g, list | tuple) else [g]:
                mem.add(t, kind)
    return mem.totals()


def _worker(rank: int, world: int, port: int, stage: int, dtype: str, model: str, out: str):
    import deepspeed
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    from transformers.integrations import HfDeepSpeedConfig

    from medray.models.registry import get_preset, resolve

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK="0",
    )
    torch.manual_seed(0)
    # DeepSpeed JIT-compiles a shared-memory collective op for CPU on first use (minutes,
    # and it races between processes); it only speeds up CPU collectives and changes no
    # tensor the benchmark counts, so it is left out.
    import sys

    import deepspeed.comm.torch  # the module; the attribute deepspeed.comm.torch is torch

    sys.modules["deepspeed.comm.torch"].build_shm_op = lambda: None
    deepspeed.init_distributed(dist_backend="gloo")
    ds_config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world,
        "zero_optimization": {"stage": stage},
        "zero_allow_untested_optimizer": True,
        "bf16": {"enabled": dtype == "bf16"},
        "steps_per_print": 10**9,
    }
    keep = HfDeepSpeedConfig(ds_config)  # noqa: F841 - ZeRO-3: partition at from_pretrained
    kind = get_preset(model).kind
    cls = AutoModelForImageTextToText if kind == "vlm" else AutoModelForCausalLM
    net = cls.from_pretrained(resolve(model, kind), dtype=torch.float32)
    n_params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in net.parameters())
    # 0-dim parameters cannot be broadcast over gloo by DeepSpeed (see HELPERS pitfalls).
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    engine, *_ = deepspeed.initialize(model=net, optimizer=opt, config=ds_config)
    vocab = net.config.get_text_config().vocab_size
    ids = torch.randint(0, vocab, (1, 16))
    loss = engine(input_ids=ids, labels=ids).loss
    engine.backward(loss)
    engine.step()
    counts = _count(engine)
    counts.update(rank=rank, stage=stage, dtype=dtype, n_params=int(n_params))
    Path(out, f"rank{rank}.json").write_text(json.dumps(counts))
    torch.distributed.barrier()


def measure(stage: int, dtype: str, model: str, ranks: int) -> dict[str, Any]:
    """Per-rank byte counts of one (stage, dtype) run: the largest rank's figures."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="zero-mem-") as out:
        mp.spawn(
            _worker, args=(ranks, _free_port(), stage, dtype, model, out), nprocs=ranks, join=True
        )
        per_rank = [json.loads(p.read_text()) for p in sorted(Path(out).glob("rank*.json"))]
    worst = max(per_rank, key=lambda r: r["total"])
    return {
        "benchmark": "zero_memory",
        "model": model,
        "ranks": ranks,
        "stage": stage,
        "dtype": dtype,
        "n_params": worst["n_params"],
        "per_rank_bytes": {
            k: worst[k] for k in ("params", "grads", "master", "optimizer_state", "total")
        },
        "per_rank_totals": [r["total"] for r in per_rank],
    }


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.zero_memory", description=__doc__)
    ap.add_argument("--model", default="tiny-qwen2-vl", help="a registry preset (vlm or lm)")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--dtypes", default="fp32,bf16", help="comma-separated: fp32, bf16")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from medray.models.registry import get_preset, resolve

    resolve(
        args.model, get_preset(args.model).kind
    )  # build a tiny preset once, before the ranks load it
    results = []
    for dtype in args.dtypes.split(","):
        runs = {stage: measure(stage, dtype, args.model, args.ranks) for stage in (0, 3)}
        for r in runs.values():
            print(json.dumps(r), flush=True)
            results.append(r)
        ratio = runs[3]["per_rank_bytes"]["total"] / runs[0]["per_rank_bytes"]["total"]
        line = {
            "benchmark": "zero_memory",
            "model": args.model,
            "ranks": args.ranks,
            "dtype": dtype,
            "zero3_over_zero0": round(ratio, 4),
            "goal": 0.55,
            "meets_goal": ratio <= 0.55,
        }
        print(json.dumps(line), flush=True)
        results.append(line)
    return results


if __name__ == "__main__":
    main()
