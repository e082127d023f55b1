"""Pieces every trl trainer of MedRay shares: step count, HF training arguments (SFT and
GRPO), the trl ``SFTConfig``, the peft ``LoraConfig`` and the step of an HF checkpoint.

The SFT worker loop itself is :func:`medray.train.sft_recipe.sft_loop`.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medray.train.settings import LoraSettings, OptimSettings

if TYPE_CHECKING:
    from medray.train.sft_recipe import SFTRecipeSettings


def steps_for(num_rows: int, optim: OptimSettings, num_workers: int) -> int:
    """Optimizer steps for ``optim.epochs`` over ``num_rows`` (``max_steps`` wins if set)."""
    if optim.max_steps > 0:
        return optim.max_steps
    per_step = optim.batch_size * optim.grad_accum * num_workers
    return max(1, math.ceil(num_rows * optim.epochs / per_step))


def trainer_args(optim, deepspeed, output_dir: str, max_steps: int, use_gpu: bool) -> dict:
    """The HF ``TrainingArguments`` fields every MedRay trl trainer (SFT, GRPO) shares."""
    from medray.train.ray_hf import deepspeed_config

    return dict(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=optim.batch_size,
        gradient_accumulation_steps=optim.grad_accum,
        learning_rate=optim.lr,
        warmup_steps=optim.warmup_ratio,  # transformers 5: a float in [0, 1) is a ratio
        weight_decay=optim.weight_decay,
        lr_scheduler_type=optim.lr_scheduler,
        logging_steps=optim.logging_steps,
        save_strategy="steps",
        save_steps=optim.save_steps,
        save_total_limit=2,
        seed=optim.seed,
        report_to="none",
        use_cpu=not use_gpu,
        bf16=use_gpu,
        deepspeed=deepspeed_config(deepspeed),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def sft_args(
    settings: SFTRecipeSettings, output_dir: str, max_steps: int, use_gpu: bool, **extra: Any
):
    """trl ``SFTConfig`` from settings. Build it before loading the model (ZeRO-3 needs that)."""
    from trl import SFTConfig

    common = trainer_args(settings.optim, settings.deepspeed, output_dir, max_steps, use_gpu)
    return SFTConfig(**common, max_length=settings.optim.max_length, **extra)


def peft_config(lora: LoraSettings, task_type: str = "CAUSAL_LM"):
    """peft ``LoraConfig`` or None for full fine-tuning."""
    if not lora.enabled:
        return None
    from peft import LoraConfig

    return LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=list(lora.target_modules),
        modules_to_save=list(lora.modules_to_save) or None,
        task_type=task_type,
    )


def _step_of(hf_checkpoint_dir: str) -> int:
    state = Path(hf_checkpoint_dir) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.is_file() else 0
