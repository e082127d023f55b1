"""Supervised fine-tuning (trl + peft LoRA or full) in Ray Train + DeepSpeed, then evaluation.

One recipe, three uses (``task``): the ``reasoner`` (a vision-language model answering
with one JSON object ``{"caption", "reasoning", "boxes", "answer"}``), the
``summariser`` (step-wise reasoning -> short diagnosis summary) and ``medqa`` (MedMCQA
layout: answer letter + explanation). Reads the preprocessed Parquet (unified schema)
through Ray Data, checks everything it can before any worker starts (model preset and
kind, splits present, usable rows), trains in a ``TorchTrainer`` (checkpoints and resume
through Ray Train), then generates on the held-out split and writes the metrics
(closed/open accuracy, JSON validity, box rate; MCQ accuracy; BLEU/ROUGE) to the summary.

    python -m jobs.train_sft --config jobs/configs/sft_reasoner_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medray.config import ConfigError, parse_args, to_dict
from medray.runtime import setup_logging
from medray.train.settings import RunSettings, ScalingSettings
from medray.train.sft_recipe import SFTRecipeSettings

log = logging.getLogger("jobs.train_sft")
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sft_reasoner_tiny.yaml"
EVAL_COLUMNS = (
    "sample_id",
    "answer",
    "answer_type",
    "content_type",
    "modality",
    "organ",
    "boxes",
    "choices",
    "impression",
    "findings",
)


EVAL_ROWS_FILE = "eval_outputs.jsonl"  # per held-out row: sample_id, prompt, raw_text, reference


@dataclass(frozen=True)
class SFTDataSettings:
    """Which preprocessed rows to train and evaluate on."""

    input: str = ""  # a jobs.preprocess output folder (or s3://...)
    train_split: str = "train"
    eval_split: str = "test"
    limit_train: int = 0  # 0: all usable rows
    limit_eval: int = 0
    blank_images: bool = False  # the blank-image control: train and evaluate on black images


@dataclass(frozen=True)
class SFTEvalSettings:
    """Held-out evaluation after training (greedy generation)."""

    enabled: bool = True
    max_new_tokens: int = 0  # 0: the task's contract (what its Serve deployment generates)
    batch_size: int = 32


@dataclass(frozen=True)
class TrainSFTConfig:
    """Supervised fine-tuning of the reasoner, summariser or medical-QA model."""

    task: Literal["reasoner", "summariser", "medqa"] = "reasoner"
    # The reasoner's output format (medray.contracts.reasoner.OUTPUT_FORMATS): the full
    # object every path serves, or an ablation (reasoning_answer, answer); recorded with
    # the final model so batch inference prompts and parses it the same way.
    output_format: Literal["caption_reasoning_answer", "reasoning_answer", "answer"] = (
        "caption_reasoning_answer"
    )
    run: RunSettings = field(default_factory=lambda: RunSettings(name="sft"))
    data: SFTDataSettings = field(default_factory=SFTDataSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    sft: SFTRecipeSettings = field(default_factory=SFTRecipeSettings)
    eval: SFTEvalSettings = field(default_factory=SFTEvalSettings)

    def __post_init__(self) -> None:
        from medray.contracts.reasoner import DEFAULT_FORMAT

        if self.task != "reasoner" and self.output_format != DEFAULT_FORMAT:
            raise ConfigError(
                f"output_format {self.output_format!r} is the reasoner's; task {self.task!r} "
                "has one format (leave output_format out)"
            )


class SFTInputError(ValueError):
    """The config or the data cannot make a training run; the message says what to fix."""


def check_model(cfg: TrainSFTConfig) -> str:
    """Resolve the model for the task's kind (builds a tiny preset once, on the driver)."""
    from medray.models.registry import UnknownPresetError, resolve
    from medray.train.sft_tasks import MODEL_KIND

    kind = MODEL_KIND[cfg.task]
    try:
        return resolve(cfg.sft.model, kind)
    except UnknownPresetError as e:
        raise SFTInputError(f"sft.model: {e}") from None
    except ValueError as e:
        raise SFTInputError(f"sft.model {cfg.sft.model!r} for task {cfg.task!r}: {e}") from None


def build_dataset(cfg: TrainSFTConfig, split: str, limit: int, keep: tuple[str, ...] = ()):
    """One split as training rows (``prompt``, ``completion``, ``image`` + ``keep``), materialised.

    Returns ``(dataset, counts)``; counts: ``rows`` in the split, ``usable`` for the task.

    Raises:
        SFTInputError: no input, a missing split, or no usable row for the task.
    """
    from medray.data.output import OutputError, read_ray_dataset
    from medray.train.ray_hf import materialize_in_order
    from medray.train.sft_tasks import ROW_TASK, training_row, usable

    d, task = cfg.data, cfg.task
    if not d.input:
        raise SFTInputError("data.input is empty: point it at a jobs.preprocess output folder")
    try:
        ds = read_ray_dataset(d.input, split)
    except (OutputError, FileNotFoundError, ValueError) as e:
        raise SFTInputError(f"data: split {split!r} of {d.input}: {e}") from None

    fmt = cfg.output_format

    def to_row(row: dict[str, Any]) -> dict[str, Any]:
        return {**training_row(task, row, fmt), **{k: row.get(k) for k in keep}}

    selected = ds.filter(lambda r: usable(task, r))
    if limit:
        selected = selected.limit(limit)
    prepared = materialize_in_order(selected.map(to_row))  # one order in every run
    counts = {"rows": split_rows(d.input, split), "usable": prepared.count()}
    if counts["usable"] == 0:
        raise SFTInputError(
            f"data: split {split!r} of {d.input} has no usable rows for task {task!r} "
            f"(needs {ROW_TASK[task]!r} rows; {counts['rows']} rows in the split)"
        )
    return prepared, counts


def split_rows(location: str, split: str) -> int:
    """Rows in one split, from the Parquet footers (no data read)."""
    import pyarrow.parquet as pq

    from medray.data import io
    from medray.data.output import data_files

    total = 0
    for loc in data_files(location, split):
        fs, path = io.filesystem(loc)
        with fs.open_input_file(path) as f:
            total += pq.ParquetFile(f).metadata.num_rows
    return total


def build_trainer(cfg: TrainSFTConfig, train_ds, max_steps: int):
    """The Ray Train ``TorchTrainer`` running :func:`medray.train.sft_recipe.sft_loop`."""
    from ray.train.torch import TorchTrainer

    from medray.train.ray_hf import run_config, scaling_config, unsplit_data_config
    from medray.train.sft_recipe import sft_loop
    from medray.train.sft_tasks import MODEL_KIND

    return TorchTrainer(
        sft_loop,
        train_loop_config={
            "settings": cfg.sft,
            "kind": MODEL_KIND[cfg.task],
            "blank_images": cfg.data.blank_images,
            "max_steps": max_steps,
            "use_gpu": cfg.scaling.use_gpu,
            "output_format": cfg.output_format if cfg.task == "reasoner" else None,
        },
        scaling_config=scaling_config(cfg.scaling),
        run_config=run_config(cfg.run),
        datasets={"train": train_ds},
        dataset_config=unsplit_data_config(),
    )


def contract_tokens(task: str) -> int:
    """The generation length of ``task``'s contract (the served model's default)."""
    from medray.contracts import medqa, reasoner, summariser

    return {"reasoner": reasoner, "summariser": summariser, "medqa": medqa}[task].MAX_NEW_TOKENS


def evaluate(
    cfg: TrainSFTConfig, eval_ds, checkpoint: str, rows_path: Path | None = None
) -> dict[str, Any]:
    """Generate on the held-out rows with the final model and score them; with
    ``rows_path``, also write each row's prompt, output and reference there (JSON lines:
    the outputs a served model is compared with)."""
    from medray.train.sft_eval import SFTGenerator, score
    from medray.train.sft_tasks import MODEL_KIND

    generated = eval_ds.map_batches(
        SFTGenerator,
        fn_constructor_kwargs={
            "checkpoint": checkpoint,
            "kind": MODEL_KIND[cfg.task],
            "max_new_tokens": cfg.eval.max_new_tokens or contract_tokens(cfg.task),
            "blank_images": cfg.data.blank_images,
        },
        batch_format="pandas",
        batch_size=cfg.eval.batch_size,
        concurrency=1,
    ).take_all()
    if rows_path is not None:
        write_eval_rows(rows_path, generated)
    return score(cfg.task, generated, cfg.output_format)


def write_eval_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    """The held-out rows' prompts, generated texts and references, one JSON line each."""
    keys = ("sample_id", "prompt", "raw_text", "answer", "impression", "findings")
    with path.open("w") as f:
        for r in rows:
            f.write(json.dumps({k: r.get(k) for k in keys}, default=str) + "\n")


def run(cfg: TrainSFTConfig) -> dict[str, Any]:
    """Check inputs, train, evaluate; return (and write) the summary."""
    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path
    from medray.train.sft import steps_for

    t0 = time.perf_counter()
    base = check_model(cfg)  # before any data or worker: an unknown preset fails here
    init_ray()
    d = cfg.data
    train_ds, train_counts = build_dataset(cfg, d.train_split, d.limit_train)
    eval_ds, eval_counts = None, None
    if cfg.eval.enabled:
        keep = tuple(c for c in EVAL_COLUMNS)
        eval_ds, eval_counts = build_dataset(cfg, d.eval_split, d.limit_eval, keep)
    max_steps = steps_for(train_counts["usable"], cfg.sft.optim, cfg.scaling.num_workers)
    log.info(
        "task %s: %d training rows, %d optimiser steps on %d worker(s), ZeRO stage %s",
        cfg.task,
        train_counts["usable"],
        max_steps,
        cfg.scaling.num_workers,
        cfg.sft.deepspeed.zero_stage if cfg.sft.deepspeed.enabled else "off",
    )
    t_train = time.perf_counter()
    result = build_trainer(cfg, train_ds, max_steps).fit()
    train_seconds = time.perf_counter() - t_train
    metrics = result.metrics or {}
    final = result.checkpoint.path if result.checkpoint else None
    evaluation = None
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    if eval_ds is not None and final:
        t_eval = time.perf_counter()
        evaluation = evaluate(cfg, eval_ds, final, out_dir / EVAL_ROWS_FILE)
        evaluation["seconds"] = round(time.perf_counter() - t_eval, 1)
        evaluation["rows_file"] = str(out_dir / EVAL_ROWS_FILE)
    summary = {
        "run": cfg.run.name,
        "task": cfg.task,
        "output_format": cfg.output_format if cfg.task == "reasoner" else None,
        "model": cfg.sft.model,
        "base_model": base,
        "training_mode": metrics.get("training_mode"),
        "blank_images": d.blank_images,
        "rows": {"train": train_counts, "eval": eval_counts},
        "steps": metrics.get("steps"),
        "max_steps": max_steps,
        "loss_first": metrics.get("loss_first"),
        "loss_last": metrics.get("loss_last"),
        "resumed_from_step": metrics.get("resumed_from_step"),
        "workers": metrics.get("workers", []),
        "final_checkpoint": final,
        "adapter": final if metrics.get("adapter") else None,
        "eval": evaluation,
        "train_seconds": round(train_seconds, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    _print(summary, out_dir)
    return summary


def _print(s: dict[str, Any], out_dir: Path) -> None:
    print(f"\n=== MedRay SFT summary ({s['task']}, {s['training_mode']}) ===")
    print(f"rows: {s['rows']}")
    print(
        f"steps {s['steps']} (resumed from {s['resumed_from_step']}), "
        f"loss {s['loss_first']} -> {s['loss_last']}, {s['train_seconds']} s"
    )
    ev = s.get("eval") or {}
    keys = (
        "closed_accuracy",
        "closed_majority_rate",
        "open_accuracy",
        "json_validity",
        "box_rate",
        "accuracy",
        "majority_rate",
        "rougeL",
        "bleu",
    )
    shown = {k: ev[k] for k in keys if ev.get(k) is not None}
    print("held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in shown.items()))
    print(f"final checkpoint: {s['final_checkpoint']}")
    print(f"RESULTS: {out_dir}/summary.json")


def main(cfg: TrainSFTConfig) -> dict[str, Any]:
    """The job's entry point (same as :func:`run`)."""
    return run(cfg)


if __name__ == "__main__":
    setup_logging()
    main(
        parse_args(
            TrainSFTConfig,
            sys.argv[1:],
            prog="python -m jobs.train_sft",
            default_config=DEFAULT_CONFIG,
        )
    )
