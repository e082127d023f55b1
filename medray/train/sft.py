"""Supervised fine-tuning of text models with trl inside Ray Train (+ DeepSpeed, + peft LoRA).

``text_sft_loop`` is a ``train_loop_per_worker``: each Ray Train worker builds a trl
``SFTTrainer`` on a prompt/completion dataset (loss on the completion only), reports
metrics and checkpoints to Ray Train through ``RayTrainReportCallback`` and resumes from
Ray Train's latest checkpoint after a failure.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medray.train.settings import DeepSpeedSettings, FaultSettings, LoraSettings, OptimSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TextSFTSettings:
    """What every worker needs to fine-tune a causal LM on prompt/completion pairs."""

    model: str = "tiny-lm"
    lora: LoraSettings = field(default_factory=lambda: LoraSettings(enabled=False))
    optim: OptimSettings = field(default_factory=OptimSettings)
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    fault: FaultSettings = field(default_factory=FaultSettings)


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
    settings: TextSFTSettings, output_dir: str, max_steps: int, use_gpu: bool, **extra: Any
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


def text_sft_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop.

    ``config``: ``settings`` (TextSFTSettings), ``max_steps`` (int), ``use_gpu`` (bool).
    """
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTTrainer

    from medray.models import resolve
    from medray.train.ray_hf import (
        dataset_from_ray,
        fault_callback,
        gather_workers,
        latest_checkpoint,
        report_again,
        report_final,
        skip_deepspeed_shm_build,
    )

    skip_deepspeed_shm_build()
    settings: TextSFTSettings = config["settings"]
    logging.getLogger("dill").setLevel(logging.WARNING)  # datasets' hashing is chatty at INFO
    # Everything this worker writes locally (data, HF checkpoints, the final model) lives
    # here and is removed when the loop ends; what matters was reported to Ray Train.
    with tempfile.TemporaryDirectory(prefix="medray-sft-") as workdir:
        previous = latest_checkpoint(workdir)
        if previous and previous[0] == "final":  # the run had already finished
            report_again(previous[1])
            return
        train_ds = dataset_from_ray("train", workdir, columns=["prompt", "completion"])
        args = sft_args(settings, f"{workdir}/out", config["max_steps"], config["use_gpu"])
        location = resolve(settings.model, "lm")
        tokenizer = AutoTokenizer.from_pretrained(location)
        model = AutoModelForCausalLM.from_pretrained(location)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            processing_class=tokenizer,
            peft_config=peft_config(settings.lora),
            callbacks=[RayTrainReportCallback(), fault_callback(settings.fault.fail_at_step)],
        )
        trainer = prepare_trainer(trainer)
        trainer.train(resume_from_checkpoint=previous[1] if previous else None)

        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics = {
            "loss": losses[-1] if losses else float("nan"),
            "loss_first": losses[0] if losses else float("nan"),
            "loss_last": losses[-1] if losses else float("nan"),
            "steps": trainer.state.global_step,
            "resumed_from_step": _step_of(previous[1]) if previous else 0,
            "workers": gather_workers(),
        }
        report_final(trainer, metrics, workdir, save_extra=tokenizer.save_pretrained)


def _step_of(hf_checkpoint_dir: str) -> int:
    state = Path(hf_checkpoint_dir) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.is_file() else 0
