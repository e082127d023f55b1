"""Config pieces shared by every training job (scaling, DeepSpeed, run storage, LoRA, optimiser).

The same YAML runs on one CPU worker locally or N GPU workers on a cluster: only the
values change (``scaling.use_gpu``, ``scaling.num_workers``, ``model``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from medray.config import ConfigError


@dataclass(frozen=True)
class ScalingSettings:
    """How many Ray Train workers, on what, placed how."""

    num_workers: int = 2
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    placement_strategy: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = "SPREAD"

    def __post_init__(self) -> None:
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers must be at least 1, got {self.num_workers}")


@dataclass(frozen=True)
class DeepSpeedSettings:
    """DeepSpeed ZeRO settings (stage 0 disables ZeRO but still runs through DeepSpeed)."""

    enabled: bool = True
    zero_stage: Literal[0, 1, 2, 3] = 2
    offload_optimizer: bool = False


@dataclass(frozen=True)
class RunSettings:
    """Where a run's checkpoints and outputs go, and how failures are handled."""

    name: str = "run"
    storage_path: str = ""  # empty: $MEDRAY_HOME/runs (use s3:// or a shared FS on a cluster)
    max_failures: int = 1
    num_checkpoints_to_keep: int = 2


@dataclass(frozen=True)
class LoraSettings:
    """peft LoRA; ``enabled: false`` means full fine-tuning."""

    enabled: bool = True
    r: int = 8
    alpha: int = 16
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    # Modules trained in full and saved with the adapter (e.g. a randomly initialised
    # vision tower: ``visual`` in Qwen2-VL).
    modules_to_save: tuple[str, ...] = ()
    quantize_4bit: bool = False  # QLoRA (bitsandbytes); only honoured on GPU workers


@dataclass(frozen=True)
class OptimSettings:
    """Optimiser and schedule; ``max_steps > 0`` overrides ``epochs``."""

    epochs: float = 1.0
    max_steps: int = -1
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 2e-4
    warmup_ratio: float = 0.0
    weight_decay: float = 0.0
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "linear"
    max_length: int = 512
    logging_steps: int = 5
    save_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.warmup_ratio < 1.0:
            raise ConfigError(f"optim.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.batch_size < 1 or self.grad_accum < 1:
            raise ConfigError("optim.batch_size and optim.grad_accum must be at least 1")


@dataclass(frozen=True)
class FaultSettings:
    """Testing aid: make rank 0 raise once, on the first attempt only, when it reaches
    ``fail_at_step`` (0 = never), to exercise Ray Train's restart-and-resume path."""

    fail_at_step: int = 0
