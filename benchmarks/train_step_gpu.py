"""Training throughput of the GPU reasoner config on one GPU: QLoRA vs bf16 LoRA, same run.

    python benchmarks/train_step_gpu.py [--steps 20] [--batch 8] [--text-tokens 128]

The model is Qwen2-VL at the architecture of the ``qwen2-vl-2b`` preset
(Qwen/Qwen2-VL-2B-Instruct's published config) with random weights: no hub access is needed,
and step time does not depend on the weights' values. It is saved once and loaded the way
``medray.train.sft_recipe`` loads a model (``quantization_config`` and ``peft_config`` from
MedRay, LoRA settings and image size from ``jobs/configs/pipeline_gpu.yaml``'s
``sft_reasoner`` section). Each step is a forward + backward + AdamW step on a batch of
synthetic rows shaped like the SFT rows: one 448x448 image (256 visual tokens after the 2x2
merge) and ``--text-tokens`` text tokens, loss on the last quarter of the text. One JSON line
per mode (samples/s, step ms, peak GPU memory), then the QLoRA / LoRA ratios. Needs CUDA and
bitsandbytes (the ``gpu`` extra).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]

# Qwen/Qwen2-VL-2B-Instruct's architecture (its config.json); weights are random here.
QWEN2_VL_2B = {
    "text": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                 num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                 max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                 rope_scaling={"type": "mrope", "mrope_section": [16, 24, 24]}),
    "vision": dict(depth=32, embed_dim=1280, hidden_size=1536, num_heads=16, mlp_ratio=4,
                   patch_size=14, spatial_merge_size=2, temporal_patch_size=2, in_channels=3),
    "ids": dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
                vision_end_token_id=151653, bos_token_id=151643, eos_token_id=151645),
}  # fmt: skip


def emit(**row) -> None:
    print(json.dumps(row), flush=True)


def build_model(folder: Path) -> None:
    import torch
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

    cfg = Qwen2VLConfig(
        text_config=QWEN2_VL_2B["text"], vision_config=QWEN2_VL_2B["vision"], **QWEN2_VL_2B["ids"]
    )
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Qwen2VLForConditionalGeneration(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    emit(what="model", params=sum(p.numel() for p in model.parameters()))
    del model
    torch.cuda.empty_cache()


def batch(n: int, text_tokens: int, image_side: int, device: str = "cuda"):
    """Synthetic SFT rows: <vision_start> 256 x <image_pad> <vision_end> + text tokens."""
    import torch

    ids = QWEN2_VL_2B["ids"]
    grid = image_side // 14  # patches per side; 2x2 merge -> (grid / 2)^2 visual tokens
    visual = (grid // 2) ** 2
    g = torch.Generator().manual_seed(0)
    text = torch.randint(1000, 150000, (n, text_tokens), generator=g)
    img = torch.tensor([ids["vision_start_token_id"], *[ids["image_token_id"]] * visual,
                        ids["vision_end_token_id"]]).expand(n, -1)  # fmt: skip
    input_ids = torch.cat([text[:, :8], img, text[:, 8:]], dim=1)
    labels = torch.full_like(input_ids, -100)
    labels[:, -text_tokens // 4 :] = input_ids[:, -text_tokens // 4 :]
    pixel_values = torch.randn(n * grid * grid, 3 * 2 * 14 * 14, generator=g)
    out = {
        "mm_token_type_ids": (input_ids == ids["image_token_id"]).long(),  # transformers >= 5.2x
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "labels": labels,
        "pixel_values": pixel_values.to(torch.bfloat16),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * n),
    }
    return {k: v.to(device) for k, v in out.items()}


def run_mode(folder: Path, settings, quantize: bool, args) -> dict:
    import dataclasses
    import inspect

    import torch
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Qwen2VLForConditionalGeneration

    from medray.train.sft import peft_config
    from medray.train.sft_recipe import quantization_config

    lora = dataclasses.replace(settings.lora, quantize_4bit=quantize)
    s = dataclasses.replace(settings, lora=lora)
    quant = quantization_config(s, use_gpu=True)
    torch.cuda.reset_peak_memory_stats()
    model = Qwen2VLForConditionalGeneration.from_pretrained(
        folder, dtype=torch.bfloat16, quantization_config=quant, device_map={"": 0}
    )
    if quant is not None:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    model = get_peft_model(model, peft_config(s.lora))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    side = round(settings.max_pixels**0.5)
    data = batch(args.batch, args.text_tokens, side)
    if (
        "mm_token_type_ids"
        not in inspect.signature(Qwen2VLForConditionalGeneration.forward).parameters
    ):
        data.pop("mm_token_type_ids")
    model.train()
    times = []
    for step in range(args.warmup + args.steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(**data).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - t0)
    times.sort()
    step_s = times[len(times) // 2]
    row = dict(
        what="train_step",
        mode="qlora_nf4" if quantize else "lora_bf16",
        batch=args.batch,
        seq_len=int(data["input_ids"].shape[1]),
        image_side=side,
        trainable_params=trainable,
        step_ms_p50=round(step_s * 1000, 1),
        samples_per_s=round(args.batch / step_s, 2),
        peak_gpu_gib=round(torch.cuda.max_memory_allocated() / 2**30, 2),
        loss=round(float(loss), 4),
    )
    del model, opt
    torch.cuda.empty_cache()
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--text-tokens", type=int, default=128)
    args = p.parse_args()

    import torch

    from medray.config import from_dict
    from medray.train.sft_recipe import SFTRecipeSettings

    cfg = yaml.safe_load((REPO / "jobs/configs/pipeline_gpu.yaml").read_text())
    settings = from_dict(SFTRecipeSettings, cfg["sft_reasoner"]["sft"])
    emit(what="device", gpu=torch.cuda.get_device_name(0), torch=torch.__version__)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        build_model(Path(tmp))
        for quantize in (False, True):
            try:
                row = run_mode(Path(tmp), settings, quantize, args)
            except Exception as e:  # report the mode that failed, measure the other
                emit(what="train_step", quantize_4bit=quantize, error=f"{type(e).__name__}: {e}")
                continue
            rows[row["mode"]] = row
            emit(**row)
    if len(rows) < 2:
        raise SystemExit("a mode failed: no ratio")
    lo, q = rows["lora_bf16"], rows["qlora_nf4"]
    emit(
        what="ratio",
        qlora_over_lora_samples_per_s=round(q["samples_per_s"] / lo["samples_per_s"], 3),
        qlora_over_lora_peak_memory=round(q["peak_gpu_gib"] / lo["peak_gpu_gib"], 3),
    )


if __name__ == "__main__":
    main()
