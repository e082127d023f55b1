"""One SFT recipe for the reasoner (vision-language) and the text models, as a Ray Train loop.

``sft_loop`` is the ``train_loop_per_worker`` of ``jobs/train_sft.py``: each worker streams
the prepared train split from Ray Data (rows ``prompt``, ``completion``, ``image``; see
:mod:`medray.train.sft_tasks`), builds a trl ``SFTTrainer`` (peft LoRA or full
fine-tuning, DeepSpeed ZeRO from config), reports checkpoints to Ray Train through
``RayTrainReportCallback`` and resumes from Ray Train's latest checkpoint after a failure.
The final model (a peft adapter folder, or the full model) is reported as the last
checkpoint together with the final metrics.

Vision rows go through :class:`VisionSFTCollator` (the model's chat template, the image
through the processor, loss on the completion tokens only); text rows through trl's own
prompt-completion path (completion-only loss).
"""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from typing import Any

from medray.train.settings import DeepSpeedSettings, FaultSettings, LoraSettings, OptimSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SFTRecipeSettings:
    """What every worker needs (the model section of ``jobs/train_sft.py``'s config)."""

    model: str = "tiny-qwen2-vl"
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimSettings = field(default_factory=OptimSettings)
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    fault: FaultSettings = field(default_factory=FaultSettings)
    min_pixels: int = 0  # processor image size bounds (0: the processor's own)
    max_pixels: int = 0


def load_processor(location: str, settings: SFTRecipeSettings):
    """The VLM processor, with the configured image size bounds."""
    from transformers import AutoProcessor

    kwargs = {}
    if settings.min_pixels:
        kwargs["min_pixels"] = settings.min_pixels
    if settings.max_pixels:
        kwargs["max_pixels"] = settings.max_pixels
    return AutoProcessor.from_pretrained(location, **kwargs)


class VisionSFTCollator:
    """Batches of ``{"prompt": json messages, "completion": str, "image": bytes}`` rows.

    The conversation is rendered with the processor's chat template; labels are -100 on
    the prompt (image tokens included) and padding, so the loss covers the assistant's
    answer and its end-of-turn token only.
    """

    def __init__(self, processor, blank_images: bool = False):
        self.processor = processor
        self.blank = blank_images
        processor.tokenizer.padding_side = "right"

    def texts(self, example: dict[str, Any]) -> tuple[str, str]:
        """``(prompt_text, full_text)`` of one example."""
        messages = json.loads(example["prompt"])
        answer = {"role": "assistant", "content": [{"type": "text", "text": example["completion"]}]}
        prompt = self.processor.apply_chat_template(messages, add_generation_prompt=True)
        full = self.processor.apply_chat_template([*messages, answer])
        if not full.startswith(prompt):
            raise ValueError("the chat template renders the prompt differently with an answer")
        return prompt, full

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        from medray.contracts.reasoner import row_image

        prompts, fulls, images = [], [], []
        for ex in examples:
            p, f = self.texts(ex)
            prompts.append(p)
            fulls.append(f)
            if ex.get("image") is not None:
                images.append(row_image(ex, self.blank))
        if images and len(images) != len(examples):
            raise ValueError("a batch mixes rows with and without images")
        imgs = images or None
        batch = self.processor(text=fulls, images=imgs, padding=True, return_tensors="pt")
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        for i, p in enumerate(prompts):
            one = self.processor(
                text=[p], images=[images[i]] if images else None, return_tensors="pt"
            )
            labels[i, : one["input_ids"].shape[1]] = -100
        batch["labels"] = labels
        return batch


def quantization_config(settings: SFTRecipeSettings, use_gpu: bool):
    """bitsandbytes 4-bit (QLoRA) when asked for and a GPU is present; else None (logged)."""
    if not settings.lora.quantize_4bit:
        return None
    if not use_gpu:
        log.warning(
            "QLoRA requested (lora.quantize_4bit) but this run has no GPU: training plain "
            "LoRA in full precision instead (bitsandbytes 4-bit needs CUDA)"
        )
        return None
    if not settings.lora.enabled:
        raise ValueError("lora.quantize_4bit needs lora.enabled: 4-bit weights cannot be trained")
    import torch
    from transformers import BitsAndBytesConfig

    log.info("QLoRA: loading the base model in 4-bit NF4 (bitsandbytes), LoRA on top")
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )


def sft_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop.

    ``config``: ``settings`` (SFTRecipeSettings), ``kind`` (``"vlm"`` or ``"lm"``),
    ``blank_images`` (bool: the blank-image control), ``max_steps`` (int), ``use_gpu`` (bool).
    """
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText, AutoTokenizer
    from trl import SFTTrainer

    from medray.models import resolve
    from medray.train.ray_hf import (
        dataset_from_ray,
        fault_callback,
        gather_workers,
        latest_checkpoint,
        report_again,
        report_final,
        row_order,
        skip_deepspeed_shm_build,
    )
    from medray.train.sft import _step_of, peft_config, sft_args

    skip_deepspeed_shm_build()

    s: SFTRecipeSettings = config["settings"]
    kind = config["kind"]
    use_gpu = config["use_gpu"]
    logging.getLogger("dill").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="medray-sft-") as workdir:
        previous = latest_checkpoint(workdir)
        if previous and previous[0] == "final":
            report_again(previous[1])
            return
        columns = ["prompt", "completion"] + (["image"] if kind == "vlm" else [])
        train_ds = dataset_from_ray("train", workdir, columns=columns)
        if s.deepspeed.enabled:
            # DeepSpeed's own comm layer must wrap Ray Train's process group before the
            # ZeRO-3 model init, or DeepSpeed sees a world size of 1 and rejects the batch.
            import deepspeed

            deepspeed.init_distributed(dist_backend="nccl" if use_gpu else "gloo")
        # Args before the model: under ZeRO-3 that makes from_pretrained shard at load time.
        args = sft_args(
            s,
            f"{workdir}/out",
            config["max_steps"],
            use_gpu,
            gradient_checkpointing=False,
            remove_unused_columns=False,
        )
        location = resolve(s.model, kind)
        quant = quantization_config(s, use_gpu)
        kwargs = {"quantization_config": quant} if quant is not None else {}
        if kind == "vlm":
            processing = load_processor(location, s)
            model = AutoModelForImageTextToText.from_pretrained(location, **kwargs)
            collator = VisionSFTCollator(processing, config["blank_images"])
        else:
            processing = AutoTokenizer.from_pretrained(location)
            model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
            collator = None
        mode = "LoRA" if s.lora.enabled else "full fine-tuning"
        if quant is not None:
            mode = "QLoRA (4-bit)"
        log.info("SFT of %s (%s) with %s", s.model, kind, mode)
        trainer = SFTTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            processing_class=processing,
            data_collator=collator,
            peft_config=peft_config(s.lora),
            callbacks=[RayTrainReportCallback(), fault_callback(s.fault.fail_at_step)],
        )
        trainer = prepare_trainer(trainer)
        trainer.train(resume_from_checkpoint=previous[1] if previous else None)

        losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
        metrics = {
            "loss_first": losses[0] if losses else float("nan"),
            "loss_last": losses[-1] if losses else float("nan"),
            "loss_history": losses,
            "steps": trainer.state.global_step,
            "resumed_from_step": _step_of(previous[1]) if previous else 0,
            "training_mode": mode,
            "adapter": bool(s.lora.enabled),
            "base_model": location,
            "base_model_name": s.model,
            # The reasoner's output format (contracts.reasoner.OUTPUT_FORMATS): batch
            # inference prompts and parses this model's answers in it.
            "output_format": config.get("output_format"),
            # Each worker's train rows in order: the ranks must agree (unsplit_data_config).
            "workers": gather_workers(train_order=row_order(train_ds, "prompt")),
        }
        report_final(trainer, metrics, workdir, save_extra=processing.save_pretrained)
