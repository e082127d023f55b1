"""GPU figures at real model size: reasoner, LoRA, summariser, CLIP and an SFT step.

    python -m benchmarks.gpu_models --out benchmarks/results/gpu_models.jsonl   # on a GPU
    python -m benchmarks.gpu_models --tiny --device cpu                         # smoke test
    python -m benchmarks.gpu_models --compare BEFORE.jsonl AFTER.jsonl          # ratios

Default models are the registry's real-size RANDOM-weight builds (``qwen2-vl-2b-random``,
``qwen2.5-0.5b-random``, ``clip-vit-b-32-random``: the published architectures, bf16
like the hub checkpoints; speed and memory do not depend on the weights' values); ``--tiny``
uses the tiny presets. Every row comes from the project's own classes: the reasoner rows
from :class:`medray.serving.reasoner.Reasoner` (``stream_many``, the Serve deployment's
batched path; ``medray.models.generate.generate`` with scores, batch inference's), with and without a LoRA adapter
(random weights, shaped by the SFT config) attached through ``Reasoner.load_adapter``.

Reasoner rows: one 448x448 image + a question per request, ``--new-tokens`` greedy tokens,
batches ``--batches``; time to first token (processor + prefill + first step), decode time
per step, tokens/s per sequence and in total, peak memory. Beside each: the decode limit
(the language model's weight bytes, plus the KV cache the batch reads, over the HBM
bandwidth: nominal 4.8 TB/s and the copy bandwidth measured in the same run). Batch 1's
``--latency-requests`` runs give the P50/P95 request latency. A bare ``model.generate`` on
the same inputs is the framework's floor under the serving path. One JSON line per row,
then a ``ratios`` line. Needs no Ray, trl, DeepSpeed or pymilvus.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import gpu_parts as gp
from benchmarks.gpu_table import compare, table

REAL = {"vlm": "qwen2-vl-2b-random", "lm": "qwen2.5-0.5b-random", "clip": "clip-vit-b-32-random"}
TINY = {"vlm": "tiny-qwen2-vl", "lm": "tiny-lm", "clip": "tiny-clip"}
PRIOR_ART_MS = {"p50": 87.0, "p95": 145.0}  # prior art 003, its 2.7B QA model
SECTIONS = ("summariser", "clip", "sft", "reasoner")  # the short ones first


def stream_run(reasoner, reqs, device: str) -> dict[str, float]:
    """One ``Reasoner.stream_many`` call (the Serve deployment's batched generator),
    consumed in this thread (the deployment consumes it from a worker thread)."""
    gp.sync(device)
    t0 = time.perf_counter()
    stamps: list[float] = []
    finals: list[dict[str, Any]] = []
    for step in reasoner.stream_many(reqs):
        stamps.append(time.perf_counter())
        finals += [ev for evs in step for ev in evs if ev["type"] == "final"]
    steps = len(stamps) - 1  # the last yield carries the final events only
    return {
        "ttft": stamps[0] - t0,
        "e2e": stamps[-1] - t0,
        "step": (stamps[-2] - stamps[0]) / max(1, steps - 1),
        "tokens": statistics.mean(f["completion_tokens"] for f in finals),
        "prompt_tokens": finals[0]["prompt_tokens"],
    }


def summarize(runs: list[dict[str, float]], batch: int) -> dict[str, Any]:
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {
        "reps": len(runs),
        "prompt_tokens": int(med["prompt_tokens"]),
        "new_tokens": med["tokens"],
        "ttft_ms": 1000 * med["ttft"],
        "e2e_ms": 1000 * med["e2e"],
        "decode_ms_per_step": 1000 * med["step"],
        "tok_s_per_seq": med["tokens"] / med["e2e"],
        "tok_s_total": batch * med["tokens"] / med["e2e"],
        "decode_tok_s_per_seq": 1 / med["step"],
        "decode_tok_s_total": batch / med["step"],
    }


class Limits:
    """Decode ceilings of one model on this device."""

    def __init__(self, model, bandwidth: float | None) -> None:
        text = model.config.get_text_config()
        self.weights = gp.param_bytes(model, skip="visual")
        heads = text.num_key_value_heads
        head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
        self.kv_per_token = 2 * text.num_hidden_layers * heads * head_dim * 2  # K and V, bf16
        self.bandwidth = bandwidth

    def row(self, batch: int, context: float) -> dict[str, Any]:
        out = gp.decode_limits(self.weights, self.bandwidth)
        step_bytes = self.weights + batch * context * self.kv_per_token
        bw = (self.bandwidth or gp.H200_NOMINAL_GBS) * 1e9
        out["limit_tok_s_total_this_batch"] = batch * bw / step_bytes
        return out


def reasoner_rows(emit: gp.Emitter, args, device: str, bandwidth: float | None) -> None:
    from medray.models.generate import GenerationParams as GP
    from medray.models.generate import generate, render

    def generate_scored(reasoner, msgs, images, max_new_tokens):
        # Batch inference's call: the one generate path with scores, adapters disabled.
        texts = [render(reasoner.processor, m) for m in msgs]
        with reasoner.host.active(None) as model:
            return generate(
                model, reasoner.processor, texts, images, GP(max_new_tokens), scores=True
            )

    from medray.contracts import reasoner as reasoner_contract
    from medray.serving.reasoner import GenerationParams, GenRequest, Reasoner

    work = Path(tempfile.mkdtemp(prefix="medray-gpu-bench-"))
    adapter = work / "lora"
    reasoner = Reasoner(args.vlm, adapters={"bench-lora": str(adapter)}, device=device)
    base = reasoner.base
    limits = Limits(base, bandwidth)
    emit(
        "model",
        role="reasoner",
        model=args.vlm,
        dtype=str(base.dtype),
        attn=base.config._attn_implementation,
        params=sum(p.numel() for p in base.parameters()),
        image_processor=type(reasoner.processor.image_processor).__name__,
        **gp.decode_limits(limits.weights, bandwidth),
    )
    image = gp.test_image(args.image_size)
    params = GenerationParams(max_new_tokens=args.new_tokens)
    msgs = reasoner_contract.messages(gp.QUESTION, True)

    def reqs(n: int, lora: str | None = None):
        return [GenRequest(msgs, [image], params, lora) for _ in range(n)]

    if not processor_rows(emit, reasoner, msgs, image, device, max(args.batches)):
        # Keep the figures coming from the host path (main's) rather than none; the error
        # row says why.
        emit("fallback", what="the device image path failed; generation still uses it")
    stream_run(reasoner, [GenRequest(msgs, [image], GenerationParams(8))], device)  # warm-up
    if args.budget_s:
        fit_budget(emit, args, stream_run(reasoner, reqs(1), device))
    results: dict[tuple[str, int], dict[str, Any]] = {}

    def measure(kind: str, lora: str | None, batch: int, reps: int) -> None:
        stream_run(reasoner, reqs(batch, lora), device)  # warm-up at this batch size
        gp.reset_peak(device)
        runs = [stream_run(reasoner, reqs(batch, lora), device) for _ in range(reps)]
        row = summarize(runs, batch)
        ctx = row["prompt_tokens"] + row["new_tokens"] / 2
        row = {**row, **limits.row(batch, ctx), "peak_gib": gp.peak_gib(device)}
        row["decode_frac_of_limit"] = (
            row["decode_tok_s_total"] / row["limit_tok_s_total_this_batch"]
        )
        results[(kind, batch)] = emit(
            "reasoner", path="serve_stream_many", variant=kind, batch=batch, **row
        )
        if kind == "plain" and batch == 1:
            lat = [1000 * r["e2e"] for r in runs]
            emit(
                "reasoner_latency",
                requests=len(lat),
                new_tokens=row["new_tokens"],
                p50_ms=gp.pct(lat, 50),
                p95_ms=gp.pct(lat, 95),
                ttft_p50_ms=gp.pct([1000 * r["ttft"] for r in runs], 50),
                prior_art_003_ms=PRIOR_ART_MS,
            )

    for batch in args.batches:
        measure("plain", None, batch, args.latency_requests if batch == 1 else args.reps)

    def lora_rows() -> None:  # last: the reasoner keeps its peft wrapper once one is loaded
        emit("lora_adapter", **gp.make_lora_adapter(reasoner.base.name_or_path, adapter))
        reasoner.load_adapter("bench-lora")
        for batch in args.lora_batches:
            measure("lora", "bench-lora", batch, args.reps + (1 if batch == 1 else 0))
        if 1 in args.lora_batches:
            measure("plain_adapter_loaded", None, 1, args.reps)  # base requests, LoRA replica

    parts = {
        "bare": lambda: bare_rows(emit, reasoner, msgs, image, device, args, results),
        "scored": lambda: scored_rows(emit, reasoner, generate_scored, msgs, image, device, args),
        "lora": lora_rows,
    }
    for name, part in parts.items():
        if name in args.parts:
            guarded(emit, f"reasoner.{name}", part)
    ratios(emit, results, args)


def guarded(emit, section: str, fn) -> bool:
    """Run ``fn``; on an error emit an ``error`` row instead (one part failing must not
    lose the others' figures). True when it ran."""
    try:
        fn()
        return True
    except Exception as e:
        emit("error", section=section, error=f"{type(e).__name__}: {e}"[:2000])
        return False


def fit_budget(emit, args, probe: dict[str, float]) -> None:
    """Fewer repetitions when one request's time says the plan would outrun ``--budget-s``
    (a lent GPU's minutes are few); the ``plan`` row says what was kept."""
    # Request-equivalents of the plan: each row's runs plus one warm-up, large batches
    # counted 1.3x, the extra parts as in reasoner_rows.
    big = [b for b in args.batches if b > 1]
    cost = args.latency_requests + 1 + 1.3 * len(big) * (args.reps + 1)
    extra = {"bare": 1.2 * len(args.batches) * max(2, args.reps), "scored": 2.6}
    extra["lora"] = 1.2 * (args.reps + 2) + 1.4 * len(big) * (args.reps + 1) + args.reps + 1
    cost += sum(v for k, v in extra.items() if k in args.parts)
    planned = cost * probe["e2e"]
    kept = {"latency_requests": args.latency_requests, "parts": sorted(args.parts)}
    if args.budget_s and planned > args.budget_s:
        scale = args.budget_s / planned
        args.latency_requests = min(
            args.latency_requests, max(8, int(args.latency_requests * scale))
        )
        if scale < 0.6:
            args.parts.discard("bare")
        kept = {"latency_requests": args.latency_requests, "parts": sorted(args.parts)}
    emit("plan", request_s=probe["e2e"], planned_s=planned, budget_s=args.budget_s, **kept)


def processor_rows(emit, reasoner, msgs, image, device: str, batch: int) -> bool:
    """The processor call alone: images prepared on the host and copied, or on the device.
    False when a path failed (the error row says why)."""
    proc = reasoner.processor
    prompts = [proc.apply_chat_template(msgs, add_generation_prompt=True)] * batch
    kw = {"text": prompts, "images": [image] * batch, "return_tensors": "pt", "padding": True}
    row: dict[str, Any] = {}
    for where, extra in (("host", {}), ("device", {"device": device})):
        fn = lambda extra=extra: proc(**kw, **extra).to(device)  # noqa: E731
        if not guarded(emit, f"processor.{where}", fn):
            return False
        row[f"{where}_ms"] = 1000 * min(gp.timed(fn, device)[0] for _ in range(3))
    emit("processor", batch=batch, image_size=image.size[0], **row)
    return True


def bare_rows(emit, reasoner, msgs, image, device: str, args, results) -> None:
    """``model.generate`` on ready inputs (no streaming, no stopping criteria): the
    framework's floor under the serving path."""
    proc = reasoner.processor
    for batch in args.batches:
        prompts = [proc.apply_chat_template(msgs, add_generation_prompt=True)] * batch
        inputs = proc(text=prompts, images=[image] * batch, return_tensors="pt", padding=True).to(
            device
        )
        kw = dict(max_new_tokens=args.new_tokens, do_sample=False)

        def run(inputs=inputs, kw=kw):
            with torch.inference_mode():
                return reasoner.base.generate(**inputs, **kw)

        run()
        secs = []
        for _ in range(max(1, args.reps - 1)):
            t, out = gp.timed(run, device)
            secs.append(t)
        new = out.shape[1] - inputs["input_ids"].shape[1]
        e2e = statistics.median(secs)
        serve = results.get(("plain", batch), {}).get("e2e_ms")
        emit(
            "reasoner",
            path="hf_generate_bare",
            variant="plain",
            batch=batch,
            new_tokens=new,
            e2e_ms=1000 * e2e,
            tok_s_total=batch * new / e2e,
            serve_over_bare_e2e=serve / (1000 * e2e) if serve else None,
        )


def scored_rows(emit, reasoner, generate_scored, msgs, image, device: str, args) -> None:
    """Batch inference's path (greedy + per-token log-probabilities) at the largest batch."""
    batch = max(args.batches)
    run = lambda: generate_scored(  # noqa: E731
        reasoner, [msgs] * batch, [image] * batch, max_new_tokens=args.new_tokens
    )
    run()
    gp.reset_peak(device)
    secs, gens = gp.timed(run, device)
    new = statistics.mean(len(g.token_ids) for g in gens)
    emit(
        "reasoner",
        path="batch_infer_generate_scored",
        variant="plain",
        batch=batch,
        new_tokens=new,
        e2e_ms=1000 * secs,
        tok_s_total=batch * new / secs,
        peak_gib=gp.peak_gib(device),
    )


def ratios(emit, results, args) -> None:
    lo, hi = min(args.batches), max(args.batches)
    b1 = results[("plain", lo)]
    out: dict[str, Any] = {}
    if hi > lo:
        top = results[("plain", hi)]
        out[f"b{hi}_over_b{lo}_tok_s_total"] = top["tok_s_total"] / b1["tok_s_total"]
        out[f"b{hi}_over_b{lo}_decode_tok_s_total"] = (
            top["decode_tok_s_total"] / b1["decode_tok_s_total"]
        )
    if lo == 1:
        out["b1_decode_over_limit_nominal"] = (
            b1["decode_tok_s_per_seq"] / b1["limit_b1_tok_s_nominal"]
        )
    if lo == 1 and b1.get("limit_b1_tok_s_measured_bw"):
        out["b1_decode_over_limit_measured_bw"] = (
            b1["decode_tok_s_per_seq"] / b1["limit_b1_tok_s_measured_bw"]
        )
    for batch in args.lora_batches:
        if ("lora", batch) in results and ("plain", batch) in results:
            plain, lora = results[("plain", batch)], results[("lora", batch)]
            out[f"lora_over_plain_tok_s_b{batch}"] = lora["tok_s_total"] / plain["tok_s_total"]
    emit("ratios", **out)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="tiny presets, short runs (smoke test)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default=None, help="append the JSON lines to this file")
    ap.add_argument("--label", default="after", help="label of every row (before/after)")
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--vlm", default=None)
    ap.add_argument("--lm", default=None)
    ap.add_argument("--clip", default=None)
    ap.add_argument("--batches", default=None, help="comma-separated reasoner batch sizes")
    ap.add_argument("--new-tokens", type=int, default=None)
    ap.add_argument("--image-size", type=int, default=448)
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument("--latency-requests", type=int, default=None)
    ap.add_argument("--parts", default="bare,scored,lora", help="extra reasoner rows")
    ap.add_argument("--lora-batches", default=None, help="batch sizes with LoRA (--batches)")
    ap.add_argument("--clip-batch", type=int, default=None)
    ap.add_argument("--budget-s", type=float, default=None, help="reasoner rows' time budget")
    ap.add_argument("--table", metavar="JSONL", help="print a Markdown table of a run's rows")
    ap.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"))
    args = ap.parse_args(argv)
    names = TINY if args.tiny else REAL
    for role in names:
        setattr(args, role, getattr(args, role) or names[role])
    tiny = {"batches": "1,2", "new_tokens": 8, "reps": 1, "latency_requests": 3, "clip_batch": 8}
    real = {"batches": "1,8,32", "new_tokens": 128, "reps": 2, "latency_requests": 20}
    real["clip_batch"] = 256
    for key, value in (tiny if args.tiny else real).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.batches = sorted(int(b) for b in str(args.batches).split(","))
    lora = args.lora_batches
    args.lora_batches = sorted(int(b) for b in lora.split(",")) if lora else args.batches
    args.sections = [s for s in args.sections.split(",") if s]
    args.parts = set(args.parts.split(","))
    if unknown := set(args.sections) - set(SECTIONS):
        ap.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.compare:
        compare(*args.compare)
        return 0
    if args.table:
        print(table(args.table))
        return 0
    emit = gp.Emitter(args.out, args.label)
    device = args.device
    torch.manual_seed(0)
    bandwidth = gp.copy_bandwidth_gbs(device)
    emit(
        "device",
        device=device,
        name=torch.cuda.get_device_name() if device.startswith("cuda") else "cpu",
        torch=torch.__version__,
        transformers=__import__("transformers").__version__,
        copy_bandwidth_gbs=bandwidth,
        nominal_bandwidth_gbs=gp.H200_NOMINAL_GBS,
    )
    image = gp.test_image(args.image_size)
    steps = {
        "reasoner": lambda: reasoner_rows(emit, args, device, bandwidth),
        "sft": lambda: gp.sft_step_rows(
            emit, args.vlm, device, 0 if args.tiny else args.image_size**2, image
        ),
        "summariser": lambda: gp.summariser_rows(
            emit, args.lm, device, 32 if not args.tiny else 8, args.reps + 2, bandwidth
        ),
        "clip": lambda: gp.clip_rows(emit, args.clip, device, image, args.clip_batch),
    }
    failed = 0
    for name in args.sections:
        t0 = time.perf_counter()
        failed += not guarded(emit, name, steps[name])
        gp.free(device)
        emit("section", section=name, seconds=time.perf_counter() - t0)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
