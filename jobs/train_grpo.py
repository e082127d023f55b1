"""GRPO of the reasoner with trl on Ray Train + DeepSpeed, then SFT vs GRPO on held-out data.

Reads the preprocessed Parquet (VQA rows with images) through Ray Data, checks the input
before any worker starts (model preset, splits, rows, reference boxes for the
counterfactual reward), runs :func:`medray.train.grpo.grpo_loop` on N workers (ZeRO stage
from config; checkpoints and resume through Ray Train), then evaluates the starting
policy (the SFT model) and the GRPO policy on the held-out split with the same prompts:
mean total reward and each component, JSON validity, closed / open accuracy,
counterfactual flip rates (box region vs random region) and the blank-image control.

    python -m jobs.train_grpo --config jobs/configs/grpo_tiny.yaml data.input=DIR [key=value ...]
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medray.config import ConfigError, parse_args, to_dict
from medray.runtime import setup_logging
from medray.train.grpo import COLUMNS, GRPOSettings
from medray.train.settings import RunSettings, ScalingSettings

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "grpo_tiny.yaml"


@dataclass(frozen=True)
class GRPODataSettings:
    """Which preprocessed rows are trained on and which are held out."""

    input: str = ""  # a jobs.preprocess output folder
    tasks: tuple[str, ...] = ("vqa",)
    languages: tuple[str, ...] = ()  # empty: every language
    train_split: str = "train"
    eval_split: str = "test"
    max_train_rows: int = 0  # 0: all


@dataclass(frozen=True)
class GRPOEvalSettings:
    """The end-of-job comparison of the starting (SFT) and the GRPO policy."""

    enabled: bool = True
    max_rows: int = 64
    max_new_tokens: int = 128
    blank_control: bool = True
    # Also score this many answers per row sampled at grpo.temperature: the distribution
    # GRPO optimises (greedy answers of a confident SFT model can already be at the ceiling).
    samples: int = 0
    # A finished GRPO model (a summary's final_model): skip training and compare the start
    # policy (grpo.init) with it, e.g. on more rows (eval.max_rows=0: the whole split).
    compare_with: str = ""

    def __post_init__(self):
        if self.samples < 0:
            raise ConfigError(f"eval.samples must be 0 (off) or more, got {self.samples}")
        if self.compare_with and not self.enabled:
            raise ConfigError("eval.compare_with needs eval.enabled=true")


@dataclass(frozen=True)
class TrainGRPOConfig:
    """GRPO of the reasoner on Ray Train + DeepSpeed."""

    run: RunSettings = field(default_factory=lambda: RunSettings(name="train_grpo"))
    data: GRPODataSettings = field(default_factory=GRPODataSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)
    eval: GRPOEvalSettings = field(default_factory=GRPOEvalSettings)


class GRPOInputError(ValueError):
    """The job's input cannot be trained on; raised before any worker starts."""


def build_dataset(cfg: TrainGRPOConfig):
    """``(train, eval_rows, counts)``: the materialised train split (unified-schema VQA rows
    with images) and the held-out rows on the driver.

    Raises:
        GRPOInputError: no input, a split missing or without usable rows, no reference boxes
            while the counterfactual reward has weight.
    """
    from medray.data.output import OutputError, read_ray_dataset, read_table
    from medray.train.ray_hf import materialize_in_order

    d = cfg.data
    if not d.input:
        raise GRPOInputError(
            "data.input is empty: point it at a preprocessed Parquet folder (jobs.preprocess output)"
        )
    tasks, langs = set(d.tasks), set(d.languages)
    what = f"{sorted(tasks)} rows with an image and a question"

    def usable(r) -> bool:
        return (
            r["task"] in tasks
            and r["image"] is not None
            and bool(r["question"])
            and (not langs or r["language"] in langs)
        )

    def open_split(name: str):
        try:
            return read_ray_dataset(d.input, name)
        except (OutputError, FileNotFoundError, ValueError) as e:
            raise GRPOInputError(f"data: split {name!r} of {d.input}: {e}") from None

    # Both splits opened (lazily: the manifest and files checked) before either is read, so
    # a wrong eval split fails in a second, not after the train split was materialised.
    opened = {name: open_split(name) for name in (d.train_split, d.eval_split)}

    def no_rows(name: str) -> GRPOInputError:
        return GRPOInputError(
            f"data: split {name!r} of {d.input} has no {what}; check data.tasks and "
            "data.languages against the preprocess output"
        )

    def no_boxes() -> GRPOInputError:
        return GRPOInputError(
            f"no {what} in split {d.train_split!r} has reference boxes, which the counterfactual "
            "reward needs (a model that does not predict boxes leaves it nothing to inpaint): "
            "use a dataset with boxes (e.g. SLAKE) or set grpo.rewards.counterfactual=0"
        )

    needs_boxes = cfg.grpo.rewards.counterfactual > 0
    # First on the driver over the small columns (no image bytes): a split without the task's
    # rows, or without boxes where the reward needs them, fails in a second, before Ray Data
    # starts its workers (20-35 s on 2 cores). The image is checked on the full read below.
    for name in (d.train_split, d.eval_split):
        small = read_table(d.input, name, columns=["task", "language", "question", "boxes"])
        candidates = [r for r in small.to_pylist() if usable({**r, "image": b""})]
        if not candidates:
            raise no_rows(name)
        if name == d.train_split and needs_boxes and not any(r["boxes"] for r in candidates):
            raise no_boxes()

    def split(name: str, limit: int, on_driver: bool = False):
        """The split's usable rows: a materialised dataset, or with ``on_driver`` a list
        (the held-out rows, which go to the driver anyway: sorted there, without Ray
        Data's 200-partition sort shuffle, which took 95 s of the demo's GRPO stage)."""
        ds = opened[name].select_columns([*COLUMNS, "task", "language"]).filter(usable)
        ds = ds.drop_columns(["task", "language"])
        if on_driver:  # by id: the same rows, in the same order, in every run
            rows = sorted(ds.take_all(), key=lambda r: r["sample_id"])
            data: Any = rows[:limit] if limit else rows
            boxes = [r["boxes"] for r in data]
        else:
            if limit:  # by id, as above
                ds = ds.sort("sample_id").limit(limit)
            data = materialize_in_order(ds)  # one order in every run (by id when limited)
            boxes = [r["boxes"] for r in data.select_columns(["boxes"]).iter_rows()]
        if not boxes:
            raise no_rows(name)
        return data, len(boxes), sum(bool(b) for b in boxes)

    train, n_train, boxed_train = split(d.train_split, d.max_train_rows)
    if needs_boxes and boxed_train == 0:
        raise no_boxes()
    # Ordered: the sampling draws follow the row order (random regions follow the sample id).
    held_out, n_eval, boxed_eval = split(d.eval_split, cfg.eval.max_rows, on_driver=True)
    counts = {
        "rows": {d.train_split: n_train, d.eval_split: n_eval},
        "rows_with_boxes": {d.train_split: boxed_train, d.eval_split: boxed_eval},
    }
    return train, held_out, counts


def check_model(cfg: TrainGRPOConfig) -> tuple[str, str | None]:
    """Resolve the policy (builds a tiny preset once) before workers ask for it."""
    from medray.models.registry import resolve
    from medray.train.grpo import policy_source

    resolve(cfg.grpo.model, "vlm")  # UnknownPresetError names the valid presets
    resolve(cfg.grpo.embedder, "embedder")
    return policy_source(cfg.grpo)


def trained_policy(cfg: TrainGRPOConfig, final: str) -> tuple[str, str | None]:
    """``(base, adapter)`` of a GRPO job's final model (an adapter on the start policy's base)."""
    from medray.train.grpo import policy_source

    if not Path(final).expanduser().is_dir():
        raise FileNotFoundError(
            f"eval.compare_with {final!r} is not a folder: point it at a GRPO summary's final_model"
        )
    return policy_source(type(cfg.grpo)(**{**cfg.grpo.__dict__, "init": final}))


def build_trainer(cfg: TrainGRPOConfig, train, max_steps: int, policy: tuple[str, str | None]):
    from ray.train.torch import TorchTrainer

    from medray.train.grpo import grpo_loop
    from medray.train.ray_hf import run_config, scaling_config, unsplit_data_config

    return TorchTrainer(
        grpo_loop,
        train_loop_config={
            "settings": cfg.grpo,
            "policy": policy,
            "max_steps": max_steps,
            "use_gpu": cfg.scaling.use_gpu,
        },
        scaling_config=scaling_config(cfg.scaling),
        run_config=run_config(cfg.run),
        datasets={"train": train},
        dataset_config=unsplit_data_config(),
    )


def evaluate(cfg: TrainGRPOConfig, eval_rows, policies: dict[str, tuple[str, str | None]]):
    """Each policy on the same held-out rows and prompts."""
    from medray.train.grpo import to_pil
    from medray.train.grpo_eval import evaluate_policy

    rows = [{**r, "image": to_pil(r["image"])} for r in eval_rows]
    return {
        name: evaluate_policy(
            base,
            adapter,
            rows,
            weights=cfg.grpo.rewards,
            embedder=cfg.grpo.embedder,
            max_new_tokens=cfg.eval.max_new_tokens,
            box_source=cfg.grpo.counterfactual_box,
            blank=cfg.eval.blank_control,
            samples=cfg.eval.samples,
            temperature=cfg.grpo.temperature,
        )
        for name, (base, adapter) in policies.items()
    }


def run(cfg: TrainGRPOConfig) -> dict[str, Any]:
    """Run the job; returns (and writes) the summary."""
    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path
    from medray.train.sft import steps_for

    t0 = time.perf_counter()
    start_policy = check_model(cfg)  # before Ray and data: bad model names fail fast
    compared = trained_policy(cfg, cfg.eval.compare_with) if cfg.eval.compare_with else None
    init_ray()
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    train, eval_rows, counts = build_dataset(cfg)
    start = {"base": start_policy[0], "adapter": start_policy[1]}
    if compared:  # no training: the start policy against a finished GRPO model
        summary: dict[str, Any] = {
            "run": cfg.run.name,
            "output_dir": str(out_dir),
            **counts,
            "final_model": cfg.eval.compare_with,
            "start_policy": start,
            "eval": evaluate(cfg, eval_rows, {"sft": start_policy, "grpo": compared}),
        }
        return _finish(cfg, summary, t0, out_dir / "compare.json")
    n_train = counts["rows"][cfg.data.train_split]
    # Each optimizer step consumes batch_size / num_generations prompts per worker.
    o = cfg.grpo.optim
    prompts_per_step = max(1, o.batch_size // cfg.grpo.num_generations)
    max_steps = steps_for(
        n_train, type(o)(**{**o.__dict__, "batch_size": prompts_per_step}), cfg.scaling.num_workers
    )
    result = build_trainer(cfg, train, max_steps, start_policy).fit()
    final = result.checkpoint.path if result.checkpoint else None
    metrics = result.metrics or {}
    summary = {
        "run": cfg.run.name,
        "output_dir": str(out_dir),
        **counts,
        "max_steps": max_steps,
        "steps": metrics.get("steps"),
        "reward_first": metrics.get("reward_first"),
        "reward_last": metrics.get("reward_last"),
        "history": metrics.get("history", []),
        "resumed_from_step": metrics.get("resumed_from_step", 0),
        "workers": metrics.get("workers", []),
        "final_model": final,
        "start_policy": start,
    }
    if cfg.eval.enabled and final:
        summary["eval"] = evaluate(
            cfg, eval_rows, {"sft": start_policy, "grpo": trained_policy(cfg, final)}
        )
    return _finish(cfg, summary, t0, out_dir / "summary.json")


def _finish(cfg: TrainGRPOConfig, summary: dict[str, Any], t0: float, path: Path):
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    summary["config"] = to_dict(cfg)
    path.write_text(json.dumps(summary, indent=2, default=str))
    _print(summary, path)
    return summary


main = run


def _fmt(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def _print(s: dict[str, Any], path: Path) -> None:
    print("\n=== MedRay GRPO summary ===")
    print(f"rows: {s['rows']} (with boxes: {s['rows_with_boxes']})")
    if "steps" in s:
        print(f"steps: {s['steps']} / {s['max_steps']}; resumed from step {s['resumed_from_step']}")
        print(f"train reward: first {_fmt(s['reward_first'])}, last {_fmt(s['reward_last'])}")
    else:
        print("no training (eval.compare_with)")
    ev = s.get("eval")
    if ev:
        keys = [
            ("mean total reward", "reward"),
            ("  format", "reward_format"),
            ("  answer", "reward_answer"),
            ("  consistency", "reward_consistency"),
            ("  counterfactual", "reward_counterfactual"),
            ("JSON validity", "json_validity"),
            ("box rate", "box_rate"),
            ("closed accuracy", "closed_accuracy"),
            ("open accuracy", "open_accuracy"),
        ]
        sampled = [ev[m].get("sampled") for m in ("sft", "grpo")]
        cols = [ev["sft"], ev["grpo"]] + (sampled if all(sampled) else [])
        head = "| metric | SFT (start) | GRPO |"
        if len(cols) == 4:
            k, t = sampled[0]["samples_per_row"], sampled[0]["temperature"]
            head += f" SFT, sampled ({k}/row, T={t:g}) | GRPO, sampled |"
        print(f"held-out split, {ev['sft']['n']} rows, same prompts; greedy answers first:")
        print(head)
        print("|" + " --- |" * (len(cols) + 1))

        def row(label, get):
            print(f"| {label} | " + " | ".join(_fmt(get(c)) for c in cols) + " |")

        for label, k in keys:
            row(label, lambda c, k=k: c.get(k))
        for label, k in (
            ("box-region flip rate", "roi_flip_rate"),
            ("random-region flip rate", "random_flip_rate"),
        ):
            row(label, lambda c, k=k: (c.get("faithfulness") or {}).get(k))
        row("blank-image accuracy", lambda c: (c.get("blank_control") or {}).get("blank_accuracy"))
    print(f"final model: {s['final_model']}")
    print(f"RESULTS: {path}")


if __name__ == "__main__":
    setup_logging()
    run(
        parse_args(
            TrainGRPOConfig,
            sys.argv[1:],
            prog="python -m jobs.train_grpo",
            default_config=DEFAULT_CONFIG,
        )
    )
