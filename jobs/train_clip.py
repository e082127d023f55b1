"""Fine-tune an open_clip model on image-report pairs with Ray Train + DeepSpeed.

Reads the preprocessed Parquet (rows with task ``report``), measures zero-shot retrieval
on the test split, trains (validation image->text accuracy each epoch, best checkpoint
kept), then measures the best checkpoint on the test split: Recall@1/5/10 in both
directions, before vs after, in the summary.

    python -m jobs.train_clip --config jobs/configs/train_clip_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medray.config import parse_args, to_dict
from medray.runtime import setup_logging
from medray.train.clip import MODEL_DIR, ClipTrainSettings
from medray.train.settings import RunSettings, ScalingSettings

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "train_clip_tiny.yaml"
COLUMNS = ["sample_id", "image", "findings", "impression", "split", "task"]


@dataclass(frozen=True)
class ClipDataSettings:
    """Which preprocessed rows are image-report pairs, and how they are split."""

    input: str = ""  # a jobs.preprocess output folder
    tasks: tuple[str, ...] = ("report",)
    train_split: str = "train"
    val_split: str = "validation"
    test_split: str = "test"
    eval_batch_size: int = 64
    eval_concurrency: int = 1


@dataclass(frozen=True)
class TrainClipConfig:
    """CLIP image-report fine-tuning on Ray Train + DeepSpeed."""

    run: RunSettings = field(default_factory=lambda: RunSettings(name="train_clip"))
    data: ClipDataSettings = field(default_factory=ClipDataSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    clip: ClipTrainSettings = field(default_factory=ClipTrainSettings)
    ks: tuple[int, ...] = (1, 5, 10)


def build_dataset(cfg: TrainClipConfig) -> dict[str, Any]:
    """Ray datasets of the three splits (raw rows), with their row counts."""
    import ray

    d = cfg.data
    if not d.input:
        raise ValueError(
            "data.input is empty: point it at a preprocessed Parquet folder (jobs.preprocess output)"
        )
    tasks = set(d.tasks)
    rows = (
        ray.data.read_parquet(d.input, columns=COLUMNS)
        .filter(lambda r: r["task"] in tasks)
        .materialize()
    )
    splits = {}
    for name in (d.train_split, d.val_split, d.test_split):
        splits[name] = rows.filter(lambda r, n=name: r["split"] == n).materialize()
        if splits[name].count() == 0:
            raise ValueError(f"no {sorted(tasks)} rows in split {name!r} of {d.input}")
    return splits


def model_inputs(ds, cfg: TrainClipConfig, train: bool):
    """Decoded, transformed pixels and tokens (Ray Data actors), materialised."""
    from medray.train.clip import ClipInputs

    return ds.map_batches(
        ClipInputs,
        fn_constructor_kwargs={"model": cfg.clip.model, "text": cfg.clip.text, "train": train},
        batch_format="pandas",
        batch_size=cfg.data.eval_batch_size,
        concurrency=cfg.data.eval_concurrency,
    ).materialize()


def evaluate(model: str, ds, cfg: TrainClipConfig) -> dict[str, float]:
    """Recall@K both ways of ``model`` on split ``ds`` (embeddings from Ray Data actors)."""
    from medray.eval.retrieval import retrieval_metrics
    from medray.models.encoders import ClipBatchEncoder

    out = ds.map_batches(
        ClipBatchEncoder,
        fn_constructor_kwargs={"clip_model": model, "text": cfg.clip.text},
        batch_format="pandas",
        batch_size=cfg.data.eval_batch_size,
        concurrency=cfg.data.eval_concurrency,
    ).filter(lambda r: not r["error"])
    rows = out.select_columns(["image_vec", "text_vec", "report"]).take_all()
    image = np.stack([r["image_vec"] for r in rows])
    text = np.stack([r["text_vec"] for r in rows])
    return retrieval_metrics(image, text, [r["report"] for r in rows], cfg.ks)


def build_trainer(cfg: TrainClipConfig, train_inputs, val_inputs, steps_per_epoch: int):
    from ray.train import DataConfig
    from ray.train.torch import TorchTrainer

    from medray.train.clip import clip_train_loop
    from medray.train.ray_hf import run_config, scaling_config

    return TorchTrainer(
        clip_train_loop,
        train_loop_config={
            "settings": cfg.clip,
            "use_gpu": cfg.scaling.use_gpu,
            "steps_per_epoch": steps_per_epoch,
        },
        scaling_config=scaling_config(cfg.scaling),
        run_config=run_config(cfg.run, metric="val_i2t_acc", mode="max"),
        # Materialised: the workers then read blocks without needing CPUs for Ray Data
        # tasks, which an all-CPU worker group on a small cluster would starve.
        datasets={
            "train": train_inputs.select_columns(["pixels", "tokens"]).materialize(),
            "validation": val_inputs,
        },
        dataset_config=DataConfig(
            datasets_to_split=["train"]
        ),  # every worker validates on all of it
    )


def main(cfg: TrainClipConfig) -> dict[str, Any]:
    from medray.models.registry import resolve
    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path

    init_ray()
    t0 = time.perf_counter()
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    resolve(cfg.clip.model, "clip")  # build a tiny preset once, before workers ask for it
    splits = build_dataset(cfg)
    d = cfg.data
    train_inputs = model_inputs(splits[d.train_split], cfg, train=True)
    val_inputs = model_inputs(splits[d.val_split], cfg, train=False)
    counts = {name: ds.count() for name, ds in splits.items()}
    usable = {d.train_split: train_inputs.count(), d.val_split: val_inputs.count()}
    steps_per_epoch = usable[d.train_split] // (cfg.clip.batch_size * cfg.scaling.num_workers)
    if steps_per_epoch < 1:
        raise ValueError(
            f"{usable[d.train_split]} training pairs are fewer than one global batch "
            f"({cfg.clip.batch_size} x {cfg.scaling.num_workers} workers); lower clip.batch_size"
        )

    zero_shot = evaluate(cfg.clip.model, splits[d.test_split], cfg)
    result = build_trainer(cfg, train_inputs, val_inputs, steps_per_epoch).fit()
    best = result.get_best_checkpoint("val_i2t_acc", "max")
    best_model = str(Path(best.path) / MODEL_DIR)
    fine_tuned = evaluate(best_model, splits[d.test_split], cfg)
    history = [m for _, m in sorted(result.best_checkpoints, key=lambda cm: cm[1]["epoch"])]
    last = result.metrics or {}
    summary = {
        "run": cfg.run.name,
        "output_dir": str(out_dir),
        "rows": counts,
        "unreadable_images_skipped": {k: counts[k] - v for k, v in usable.items()},
        "steps_per_epoch": steps_per_epoch,
        "epochs": cfg.clip.epochs,
        "best_val_i2t_acc": max(m["val_i2t_acc"] for m in history) if history else None,
        "history": [{k: m[k] for k in ("epoch", "train_loss", "val_i2t_acc")} for m in history],
        "zero_shot": zero_shot,
        "fine_tuned": fine_tuned,
        "recall_at_1_gain": fine_tuned["i2t_R@1"] / max(zero_shot["i2t_R@1"], 1e-9),
        "best_model": best_model,
        "latest_checkpoint": result.checkpoint.path if result.checkpoint else None,
        "workers": last.get("workers", []),
        "resumed_at_epochs": last.get("resumed_at_epochs", []),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print(summary, cfg.ks)
    return summary


def _print(s: dict[str, Any], ks) -> None:
    print("\n=== MedRay CLIP fine-tune summary ===")
    print(f"pairs: {s['rows']}  (unreadable images skipped: {s['unreadable_images_skipped']})")
    for h in s["history"]:
        print(
            f"  epoch {h['epoch']}: loss {h['train_loss']:.4f}, val image->text acc {h['val_i2t_acc']:.3f}"
        )
    print(
        f"test split, {s['fine_tuned']['n_images']} images / {s['fine_tuned']['n_texts']} distinct reports:"
    )
    print("| direction | model | " + " | ".join(f"R@{k}" for k in ks) + " |")
    print("| --- | --- | " + " | ".join("---" for _ in ks) + " |")
    for direction, label in (("i2t", "image->text"), ("t2i", "text->image")):
        for name in ("zero_shot", "fine_tuned"):
            vals = " | ".join(f"{s[name][f'{direction}_R@{k}']:.3f}" for k in ks)
            print(f"| {label} | {name.replace('_', '-')} | {vals} |")
    print(f"best model (open_clip folder): {s['best_model']}")
    print(f"RESULTS: {s['output_dir']}/summary.json")


if __name__ == "__main__":
    setup_logging()
    main(
        parse_args(
            TrainClipConfig,
            sys.argv[1:],
            prog="python -m jobs.train_clip",
            default_config=DEFAULT_CONFIG,
        )
    )
