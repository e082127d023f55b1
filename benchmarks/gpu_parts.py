"""Pieces of ``benchmarks/gpu_models.py``: timing, memory, inputs and the non-reasoner rows.

Everything here runs the project's own classes: :class:`medray.models.encoders.ClipEncoder`
(the index job's CLIP path), :class:`medray.serving.summariser.Summariser`, the SFT recipe's
collator (:class:`medray.train.sft_recipe.VisionSFTCollator`), row format
(:func:`medray.train.sft_tasks.training_row`) and LoRA config (:func:`medray.train.sft.
peft_config`). Nothing imports Ray, trl, DeepSpeed or pymilvus.
"""

from __future__ import annotations

import io
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

H200_NOMINAL_GBS = 4800.0  # HBM3e, vendor datasheet
QUESTION = "Is there a pleural effusion? Describe the findings step by step, then answer."
REPORT = (
    "FINDINGS: The cardiomediastinal silhouette is within normal limits. There is a small left "
    "pleural effusion with blunting of the costophrenic angle. No pneumothorax. IMPRESSION: "
    "Small left pleural effusion."
)


class Emitter:
    """Prints one JSON line per result and appends it to ``out`` (when given)."""

    def __init__(self, out: str | None, label: str) -> None:
        self.out = Path(out) if out else None
        self.label = label
        self.rows: list[dict[str, Any]] = []
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)

    def __call__(self, bench: str, **fields: Any) -> dict[str, Any]:
        row = {"bench": bench, "label": self.label, **fields}
        line = json.dumps(row, default=_plain)
        print(line, flush=True)
        if self.out:
            with self.out.open("a") as f:
                f.write(line + "\n")
        self.rows.append(row)
        return row


def _plain(value: Any) -> Any:
    return round(float(value), 4) if isinstance(value, np.floating) else str(value)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def free(device: str) -> None:
    import gc

    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()


def pct(values: list[float], q: float) -> float:
    """The ``q``-th percentile (linear interpolation), ``q`` in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def timed(fn: Callable[[], Any], device: str) -> tuple[float, Any]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - t0, out


def copy_bandwidth_gbs(device: str, gib: float = 2.0, reps: int = 10) -> float | None:
    """Device-to-device copy bandwidth (bytes read + written per second), median of reps."""
    if not device.startswith("cuda"):
        return None
    n = int(gib * 2**30) // 2
    src = torch.randn(n, device=device, dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    for _ in range(3):
        dst.copy_(src)
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        dst.copy_(src)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return 2 * n * 2 / statistics.median(times) / 1e9


def param_bytes(model: torch.nn.Module, skip: str | None = None) -> int:
    """Bytes of the parameters (each shared tensor once), leaving out names containing
    ``skip`` (the vision tower, which decoding never reads)."""
    seen, total = set(), 0
    for name, p in model.named_parameters(remove_duplicate=True):
        if (skip and skip in name) or id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel() * p.element_size()
    return total


def test_image(size: int, seed: int = 0) -> Image.Image:
    """A deterministic chest-X-ray-sized noise image (speed does not depend on content)."""
    rng = np.random.default_rng(seed)
    return Image.fromarray((rng.random((size, size, 3)) * 255).astype("uint8"))


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def vqa_row(i: int, image: bytes) -> dict[str, Any]:
    """One unified-schema VQA row (what the SFT job reads from Parquet)."""
    return {
        "sample_id": f"bench-{i}",
        "task": "vqa",
        "question": QUESTION,
        "answer": "yes" if i % 2 else "no",
        "modality": "X-ray",
        "organ": "Chest",
        "findings": REPORT.split("IMPRESSION:")[0].removeprefix("FINDINGS: "),
        "content_type": "abnormality",
        "boxes": [{"label": "effusion", "x1": 0.55, "y1": 0.6, "x2": 0.9, "y2": 0.92}],
        "image": image,
    }


# ------------------------------------------------------------------ CLIP


def clip_rows(emit: Emitter, model: str, device: str, image: Image.Image, batch: int) -> None:
    """CLIP image and text throughput through the index job's encoder, end to end (host
    preprocessing + model) and the model alone on a ready batch."""
    from medray.models.encoders import ClipEncoder

    enc = ClipEncoder(model, device=device)
    images, texts = [image] * batch, [REPORT] * batch
    enc.encode_images(images[:2])
    enc.encode_texts(texts[:2])
    pixels = torch.stack([enc.preprocess(im) for im in images]).to(device)
    tokens = enc.tokenizer(texts).to(device)
    with torch.inference_mode():
        enc.model.encode_image(pixels, normalize=True)
    for what, e2e, model_only in (
        ("clip_images", lambda: enc.encode_images(images), lambda: enc.model.encode_image(pixels)),
        ("clip_texts", lambda: enc.encode_texts(texts), lambda: enc.model.encode_text(tokens)),
    ):
        reset_peak(device)
        t_e2e = min(timed(e2e, device)[0] for _ in range(3))
        t_bf16 = None
        with torch.inference_mode():
            t_model = min(timed(model_only, device)[0] for _ in range(3))
            if device.startswith("cuda"):  # what bf16 would give (the encoder runs fp32)
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    model_only()
                    t_bf16 = min(timed(model_only, device)[0] for _ in range(3))
        emit(
            what,
            model=model,
            batch=batch,
            per_s_end_to_end=batch / t_e2e,
            per_s_model_fp32=batch / t_model,
            per_s_model_bf16_autocast=batch / t_bf16 if t_bf16 else None,
            host_share_end_to_end=1 - t_model / t_e2e,
            peak_gib=peak_gib(device),
        )


# ------------------------------------------------------------------ summariser


def summariser_rows(
    emit: Emitter, model: str, device: str, new_tokens: int, reps: int, bandwidth: float | None
) -> None:
    """The Serve summariser's ``summarise`` call (one request at a time, as served)."""
    from medray.serving.summariser import Summariser

    s = Summariser(model, max_new_tokens=new_tokens, device=device)
    args = ("Chest X-ray, frontal view.", REPORT.split(". ")[:3], "yes")
    s.summarise(*args)
    reset_peak(device)
    runs = [timed(lambda: s.summarise(*args), device) for _ in range(reps)]
    secs = [t for t, _ in runs]
    tokens = runs[0][1]["tokens"]
    weights = param_bytes(s.model)
    emit(
        "summariser",
        model=model,
        dtype=str(s.model.dtype),
        new_tokens=tokens,
        latency_ms_p50=1000 * pct(secs, 50),
        tok_s=tokens / statistics.median(secs),
        peak_gib=peak_gib(device),
        **decode_limits(weights, bandwidth),
    )


def decode_limits(weight_bytes: int, bandwidth: float | None) -> dict[str, Any]:
    """Batch-1 decode ceiling: every weight byte read once per token."""
    return {
        "decode_weight_gb": weight_bytes / 1e9,
        "limit_b1_tok_s_nominal": H200_NOMINAL_GBS * 1e9 / weight_bytes,
        "limit_b1_tok_s_measured_bw": bandwidth * 1e9 / weight_bytes if bandwidth else None,
    }


# ------------------------------------------------------------------ SFT step


def sft_step_rows(emit: Emitter, vlm: str, device: str, pixels: int, image: Image.Image) -> None:
    """One LoRA SFT step at the SFT config's batch size: the recipe's row format, collator
    and LoRA config; the step itself is plain torch (AdamW, bf16 autocast on CUDA), as
    the trl/DeepSpeed trainer is not used here."""
    from peft import get_peft_model
    from transformers import AutoModelForImageTextToText

    from jobs.train_sft import DEFAULT_CONFIG, TrainSFTConfig
    from medray.config import load_config
    from medray.models import resolve
    from medray.train.sft import peft_config
    from medray.train.sft_recipe import VisionSFTCollator, load_processor
    from medray.train.sft_tasks import training_row

    overrides = [f"sft.model={vlm}"]
    if pixels:
        overrides += [f"sft.min_pixels={pixels}", f"sft.max_pixels={pixels}"]
        overrides += ["sft.lora.modules_to_save=[]"]  # the config's GPU note
    cfg = load_config(TrainSFTConfig, DEFAULT_CONFIG, overrides).sft
    batch_size = cfg.optim.batch_size
    location = resolve(cfg.model, "vlm")
    collator = VisionSFTCollator(load_processor(location, cfg))
    data = png_bytes(image)
    examples = [training_row("reasoner", vqa_row(i, data)) for i in range(batch_size)]
    model = AutoModelForImageTextToText.from_pretrained(location).to(device)
    model = get_peft_model(model, peft_config(cfg.lora))
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.optim.lr)
    cuda = device.startswith("cuda")

    def step() -> float:
        batch = collator(examples).to(device)
        with torch.autocast("cuda" if cuda else "cpu", dtype=torch.bfloat16, enabled=cuda):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    step()
    reset_peak(device)
    n = 3
    secs, loss = timed(lambda: [step() for _ in range(n)][-1], device)
    tokens = int(collator(examples)["attention_mask"].sum())
    emit(
        "sft_lora_step",
        model=vlm,
        step="plain torch AdamW step over the SFT recipe's collator, rows and LoRA config",
        batch=batch_size,
        tokens_per_batch=tokens,
        lora_r=cfg.lora.r,
        trainable_params=sum(p.numel() for p in params),
        dtype=str(model.base_model.model.dtype),
        step_ms=1000 * secs / n,
        samples_s=batch_size * n / secs,
        loss=loss,
        peak_gib=peak_gib(device),
    )


def make_lora_adapter(location: str, out_dir: Path, seed: int = 0) -> dict[str, Any]:
    """A LoRA adapter with RANDOM weights for the reasoner at ``location``, shaped by the
    SFT config's LoRA settings (built on the meta device: no base weights are loaded)."""
    from peft import get_peft_model
    from transformers import AutoConfig, AutoModelForImageTextToText

    from jobs.train_sft import DEFAULT_CONFIG, TrainSFTConfig
    from medray.config import load_config
    from medray.train.sft import peft_config

    lora = load_config(TrainSFTConfig, DEFAULT_CONFIG, ["sft.lora.modules_to_save=[]"]).sft.lora
    with torch.device("meta"):
        model = AutoModelForImageTextToText.from_config(AutoConfig.from_pretrained(location))
    peft_model = get_peft_model(model, peft_config(lora))
    gen = torch.Generator().manual_seed(seed)
    n = 0
    for module in peft_model.modules():
        for side in ("lora_A", "lora_B"):
            layers = getattr(module, side, None)
            if isinstance(layers, torch.nn.ModuleDict):
                for layer in layers.values():
                    w = torch.randn(layer.weight.shape, generator=gen) * 0.01
                    layer.weight = torch.nn.Parameter(w)
                    n += w.numel()
    peft_model.save_pretrained(str(out_dir))
    return {"r": lora.r, "target_modules": list(lora.target_modules), "params": n}
