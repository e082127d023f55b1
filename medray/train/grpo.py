"""GRPO of the reasoner with trl inside Ray Train (+ DeepSpeed ZeRO, + peft LoRA).

``grpo_loop`` is a ``train_loop_per_worker``: each worker builds a trl ``GRPOTrainer`` on
the policy (the SFT reasoner: a LoRA adapter folder or a full checkpoint, or the base
preset when none is given), with the four rewards of :mod:`medray.train.rewards` as
separate reward functions (trl logs each) weighted by ``GRPOConfig.reward_weights``.
The counterfactual reward re-asks the *current* policy greedily with the region inpainted
(:func:`generate_answers`); under ZeRO-3 the full weights are gathered once per call
(trl's ``unwrap_model_for_generation``), so every rank makes the same collective calls.

Checkpoints go to Ray Train through ``RayTrainReportCallback``; a restarted worker group
resumes from the latest one (``medray.train.ray_hf.latest_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medray.config import ConfigError
from medray.contracts.reasoner import DEFAULT_FORMAT
from medray.train.rewards import RewardWeights
from medray.train.settings import DeepSpeedSettings, FaultSettings, LoraSettings, OptimSettings

log = logging.getLogger(__name__)

# Columns of the unified schema the prompts and rewards need.
COLUMNS = [
    "sample_id",
    "image",
    "question",
    "answer",
    "answer_type",
    "choices",
    "boxes",
    "modality",
    "organ",
    "content_type",
    "labels",
]


@dataclass(frozen=True)
class GRPOSettings:
    """What every worker needs to run GRPO on the reasoner."""

    model: str = "tiny-qwen2-vl"  # base preset / hub id / folder
    init: str = ""  # SFT output: adapter folder or full checkpoint; empty = the base model
    lora: LoraSettings = field(default_factory=LoraSettings)
    optim: OptimSettings = field(
        default_factory=lambda: OptimSettings(lr=5e-6, batch_size=4, save_steps=2)
    )
    deepspeed: DeepSpeedSettings = field(default_factory=DeepSpeedSettings)
    fault: FaultSettings = field(default_factory=FaultSettings)
    num_generations: int = 4
    max_completion_length: int = 128
    temperature: float = 1.0
    beta: float = 0.0  # KL weight (0: no reference model, as in DAPO / Dr. GRPO)
    rewards: RewardWeights = field(default_factory=RewardWeights)
    embedder: str = "minilm-l6"  # sentence embedder of the consistency reward
    # Region choice of the counterfactual reward (medray.contracts.counterfactual.SOURCES).
    counterfactual_box: Literal["reference", "predicted", "both", "predicted_first"] = (
        "predicted_first"
    )
    reanswer_max_new_tokens: int = 128

    def __post_init__(self) -> None:
        if self.num_generations < 2:
            raise ConfigError("grpo.num_generations must be at least 2 (GRPO compares a group)")
        if self.optim.batch_size % self.num_generations:
            raise ConfigError(
                f"grpo.optim.batch_size ({self.optim.batch_size}) must be a multiple of "
                f"grpo.num_generations ({self.num_generations})"
            )


def policy_source(settings: GRPOSettings) -> tuple[str, str | None]:
    """``(base, adapter)``: the folder/id to load the model from and an optional adapter.

    An adapter folder is trained further on its base (:func:`medray.models.finetuned.
    describe`: the base the SFT job recorded, refused by name when it is not
    ``settings.model``); a full checkpoint folder is the base itself.

    Raises:
        FileNotFoundError: ``init`` names a folder that does not exist.
        medray.models.finetuned.AdapterBaseMismatchError: an adapter of another base.
    """
    from medray.models.finetuned import describe
    from medray.models.registry import resolve

    if not settings.init:
        return resolve(settings.model, "vlm"), None
    folder = Path(settings.init).expanduser()
    if "://" not in settings.init and not folder.is_dir():
        raise FileNotFoundError(
            f"grpo.init {settings.init!r} is not a folder: point it at the SFT job's final "
            "model (a LoRA adapter or a full checkpoint), or leave it empty for the base model"
        )
    src = describe(settings.init, "vlm", expected_base=settings.model)
    if src.output_format not in (None, DEFAULT_FORMAT):
        raise ValueError(
            f"grpo.init {settings.init!r} was trained on the {src.output_format!r} output "
            "format (a reasoning-format ablation); GRPO's rewards score the full "
            "caption-reasoning-answer object: start from an SFT model of that format"
        )
    return src.base, src.adapter


def load_processor(base: str, adapter: str | None):
    """The processor the policy was trained with (:func:`medray.models.finetuned.
    load_processing`)."""
    from medray.models.finetuned import describe, load_processing

    return load_processing(describe(adapter or base, "vlm"), "vlm")


def load_policy(base: str, adapter: str | None, trainable: bool = False):
    """The policy model: base + adapter (a trainable ``PeftModel`` or merged for inference)."""
    from medray.models.finetuned import load_finetuned

    model, _, _ = load_finetuned(
        adapter or base,
        "vlm",
        expected_base=base if adapter else None,
        trainable=trainable,
        device=None if trainable else "cpu",
    )
    return model


def generate_answers(
    model,
    processor,
    images: Sequence[Any],
    questions: Sequence[str],
    max_new_tokens: int,
    batch_size: int = 16,
    temperature: float = 0.0,
) -> list[str]:
    """Answers of ``model`` for (image, question) pairs: raw completion texts.

    The reasoner contract's prompt through the one generate path. Greedy by default;
    ``temperature > 0`` samples as trl's GRPO generation does (no top-k, top-p 1), i.e.
    from the distribution that GRPO optimises. Seed torch for repeatable draws.
    """
    from medray.contracts.reasoner import messages
    from medray.models.generate import GenerationParams, generate, render

    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=temperature)
    out: list[str] = []
    for start in range(0, len(images), batch_size):
        ims = list(images[start : start + batch_size])
        qs = list(questions[start : start + batch_size])
        texts = [render(processor, messages(q, True)) for q in qs]
        out += [g.text for g in generate(model, processor, texts, ims, params)]
    return out


def grpo_args(settings: GRPOSettings, output_dir: str, max_steps: int, use_gpu: bool):
    """trl ``GRPOConfig``; build it before loading the model (ZeRO-3 needs that)."""
    from trl import GRPOConfig

    from medray.train.sft import trainer_args

    w = settings.rewards.as_dict()
    return GRPOConfig(
        **trainer_args(settings.optim, settings.deepspeed, output_dir, max_steps, use_gpu),
        num_generations=settings.num_generations,
        max_completion_length=settings.max_completion_length,
        temperature=settings.temperature,
        beta=settings.beta,
        reward_weights=[w[k] for k in REWARD_NAMES],
        ds3_gather_for_generation=True,
        log_completions=False,  # completions are patient text: never logged
    )


REWARD_NAMES = ("format", "answer", "consistency", "counterfactual")


def to_pil(data) -> Any:
    """Image bytes (or a datasets Image dict / PIL image) -> RGB PIL image."""
    from medray.imaging import decode_image

    if data is None:
        return None
    if isinstance(data, dict):
        data = data.get("bytes")
    if hasattr(data, "convert"):
        return data.convert("RGB")
    return decode_image(bytes(data))


def reward_functions(settings: GRPOSettings, reanswer, encode, seed_of_step) -> list:
    """The four trl reward functions (named, so trl logs ``rewards/<name>/mean``)."""
    from medray.train import rewards as R

    def format(completions, **kw):
        return [R.format_reward(c) for c in completions]

    def answer(completions, answer, answer_type, choices=None, **kw):
        choices = choices or [None] * len(completions)
        return [
            R.answer_reward(c, a, t, ch)
            for c, a, t, ch in zip(completions, answer, answer_type, choices, strict=True)
        ]

    def consistency(completions, question, **kw):
        return R.consistency_rewards(completions, question, encode)

    def counterfactual(completions, image, sample_id, question, answer, answer_type, **kw):
        rows = [
            {
                "sample_id": sample_id[i],
                "question": question[i],
                "answer": answer[i],
                "answer_type": answer_type[i],
                "boxes": (kw.get("boxes") or [None] * len(completions))[i],
                "labels": (kw.get("labels") or [None] * len(completions))[i],
            }
            for i in range(len(completions))
        ]
        return R.counterfactual_rewards(
            completions,
            [to_pil(im) for im in image],
            rows,
            reanswer,
            seed=seed_of_step(),
            box_source=settings.counterfactual_box,
        )

    return [format, answer, consistency, counterfactual]


def to_trl_dataset(ds):
    """Unified-schema rows -> trl conversational prompts with a decodable ``image`` column."""
    import datasets
    from medray.contracts.reasoner import messages

    def prep(row):
        return {
            "prompt": messages(row["question"], row["image"] is not None),
            "image": {"bytes": row["image"], "path": None},
        }

    ds = ds.map(prep)
    return ds.cast_column("image", datasets.Image())


def grpo_loop(config: dict[str, Any]) -> None:
    """Ray Train worker loop.

    ``config``: ``settings`` (GRPOSettings), ``policy`` (``(base, adapter)`` from
    :func:`policy_source`, resolved once on the driver), ``max_steps`` (int), ``use_gpu``
    (bool).
    """
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback, prepare_trainer
    from trl import GRPOTrainer
    from trl.models.utils import unwrap_model_for_generation

    from medray.models.encoders import TextEncoder
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
    from medray.train.sft import peft_config

    skip_deepspeed_shm_build()
    settings: GRPOSettings = config["settings"]
    logging.getLogger("dill").setLevel(logging.WARNING)
    with tempfile.TemporaryDirectory(prefix="medray-grpo-") as workdir:
        previous = latest_checkpoint(workdir)
        if previous and previous[0] == "final":
            report_again(previous[1])
            return
        train_ds = to_trl_dataset(dataset_from_ray("train", workdir, columns=COLUMNS))
        args = grpo_args(settings, f"{workdir}/out", config["max_steps"], config["use_gpu"])
        base, adapter = config.get("policy") or policy_source(settings)
        if settings.deepspeed.enabled and settings.deepspeed.zero_stage == 3:
            # ZeRO-3 partitions inside from_pretrained (deepspeed.zero.Init), which sizes the
            # batch by DeepSpeed's own view of the world: without this it sees 1 process
            # ("train_batch_size ... 8 != 4 * 1 * 1") although Ray started 2.
            import deepspeed

            deepspeed.init_distributed(dist_backend="nccl" if config["use_gpu"] else "gloo")
        processor = load_processor(base, adapter)
        model = load_policy(base, adapter, trainable=True)
        encoder = TextEncoder(settings.embedder)
        holder: dict[str, Any] = {}

        def reanswer(images, questions):
            trainer = holder["trainer"]
            with unwrap_model_for_generation(
                trainer.model_wrapped,
                trainer.accelerator,
                gather_deepspeed3_params=True,  # no per-layer collectives while generating
            ) as unwrapped:
                was_training = unwrapped.training
                unwrapped.eval()
                try:
                    return generate_answers(
                        unwrapped, processor, images, questions, settings.reanswer_max_new_tokens
                    )
                finally:
                    unwrapped.train(was_training)

        rank = ray.train.get_context().get_world_rank()
        trainer = GRPOTrainer(
            model=model,
            args=args,
            train_dataset=train_ds,
            processing_class=processor,
            reward_funcs=reward_functions(
                settings,
                reanswer,
                encoder.encode,
                lambda: 1000 * holder["trainer"].state.global_step + 100 * rank,
            ),
            peft_config=None if adapter else peft_config(settings.lora),
            callbacks=[RayTrainReportCallback(), fault_callback(settings.fault.fail_at_step)],
        )
        holder["trainer"] = trainer
        trainer = prepare_trainer(trainer)
        trainer.train(resume_from_checkpoint=previous[1] if previous else None)

        logs = [h for h in trainer.state.log_history if "reward" in h]
        metrics = {
            "steps": trainer.state.global_step,
            "reward_first": logs[0]["reward"] if logs else float("nan"),
            "reward_last": logs[-1]["reward"] if logs else float("nan"),
            "history": [
                {
                    "step": h.get("step"),
                    "reward": h["reward"],
                    **{n: h.get(f"rewards/{n}/mean") for n in REWARD_NAMES},
                }
                for h in logs
            ],
            "resumed_from_step": _step_of(previous[1]) if previous else 0,
            "base_model": base,
            "base_model_name": settings.model,
            # Each worker's train rows in order: the ranks must agree (unsplit_data_config).
            "workers": gather_workers(train_order=row_order(train_ds, "sample_id")),
        }
        report_final(trainer, metrics, workdir, save_extra=processor.save_pretrained)


def _step_of(hf_checkpoint_dir: str) -> int:
    state = Path(hf_checkpoint_dir) / "trainer_state.json"
    return int(json.loads(state.read_text()).get("global_step", 0)) if state.is_file() else 0
