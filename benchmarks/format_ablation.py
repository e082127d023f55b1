"""The reasoning-format ablation (prior art 004): answer only, reasoning then answer, and
caption, reasoning, answer, each trained by the same SFT recipe (same data, steps and seed)
and scored on the same held-out rows with a blank-image control.

    python -m benchmarks.format_ablation                     # synthetic SLAKE, 300 steps
    python -m benchmarks.format_ablation --steps 1000        # the recipe's full length
    python -m benchmarks.format_ablation --steps 2 --limit-train 16 --limit-test 4   # smoke test
    python -m benchmarks.format_ablation --seed 1 --out $MEDRAY_HOME/runs/format-ablation-s1
    python -m benchmarks.format_ablation --summarise benchmarks/results/format-ablation-2026-12-07.jsonl

What runs (the project's own jobs, in process, on a local Ray cluster unless
``RAY_ADDRESS`` is set):

1. ``jobs.preprocess`` with ``jobs/configs/preprocess_slake_synth.yaml`` when ``--data``
   does not hold a preprocessed output yet;
2. ``jobs.train_sft`` with ``jobs/configs/sft_reasoner_synth.yaml`` three times, changing
   only ``output_format`` (and the run name): the same rows, steps and seed;
3. ``jobs.batch_infer`` of the three models over the test split (each prompted and parsed
   in the format its SFT job recorded), with the blank-image control, then
   ``jobs.evaluate``: one report with the three side by side and their paired differences
   (``medray report compare`` works on it too).

Prints the table (closed accuracy with its 95% interval, JSON validity, box rate,
blank-image accuracy per format) and appends one JSON line per format to
``benchmarks/results/format-ablation-<date>.jsonl``. ``--summarise FILE`` reads such lines
from runs with different seeds and prints, per format and step count, the mean of each
metric over the seeds with its 95% t-interval (n - 1 degrees of freedom), the seeds' spread.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np

from medray.contracts.reasoner import OUTPUT_FORMATS

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "jobs" / "configs"
METRICS = ("closed accuracy", "JSON validity", "box rate", "blank-image accuracy")


def prepare_data(location: str) -> str:
    """The preprocessed synthetic SLAKE folder (made by ``jobs.preprocess`` when missing)."""
    from jobs import preprocess
    from medray.config import load_config
    from medray.data.output import OutputError, load_manifest

    try:
        load_manifest(location)
        return location
    except OutputError:
        pass
    cfg = load_config(
        preprocess.PreprocessConfig, CONFIGS / "preprocess_slake_synth.yaml", [f"output={location}"]
    )
    preprocess.main(cfg)
    return location


def run_recipe(job: Any, config_cls: type, config: str, overrides: list[str], key: str) -> str:
    """``job.run`` in process on ``jobs/configs/<config>`` plus ``overrides``; the final
    model folder its summary names under ``key``."""
    from medray.config import load_config

    s = job.run(load_config(config_cls, CONFIGS / config, overrides))
    if not s[key]:
        raise RuntimeError(f"{config} ({' '.join(overrides)}): the job reported no final model")
    return s[key]


def train_sft(data: str, out: Path, name: str, args: argparse.Namespace, *extra: str) -> str:
    """One run of the SFT recipe (``sft_reasoner_synth.yaml``) named ``name`` with
    ``args.seed`` and ``args.limit_train`` plus ``extra`` overrides, its validation
    evaluation off (the runs are scored together on the test split); its final model folder."""
    from jobs import train_sft as job

    overrides = [
        f"run.name={name}",
        f"run.storage_path={out}",
        f"data.input={data}",
        f"data.limit_train={args.limit_train}",
        f"sft.optim.seed={args.seed}",
        "eval.enabled=false",
        *extra,
    ]
    config = "sft_reasoner_synth.yaml"
    return run_recipe(job, job.TrainSFTConfig, config, overrides, "final_checkpoint")


def train(data: str, fmt: str, args: argparse.Namespace, out: Path) -> str:
    """One SFT run of the recipe in output format ``fmt``; its final model folder."""
    name = f"ablation_{fmt}"
    return train_sft(
        data, out, name, args, f"output_format={fmt}", f"sft.optim.max_steps={args.steps}"
    )


def score(data: str, finals: dict[str, str], args: argparse.Namespace, out: Path) -> dict:
    """Batch inference of the three models + the evaluation report; the evaluate summary."""
    from jobs import batch_infer

    cfg = batch_infer.BatchInferConfig(
        name="format-ablation",
        output=str(out / "batch_infer"),
        input=batch_infer.InputSettings(
            path=data, split="test", tasks=("vqa",), limit=args.limit_test
        ),
        models=tuple(batch_infer.ModelSettings(label=f, model=m) for f, m in finals.items()),
        actors=dataclasses.replace(batch_infer.ActorSettings(), concurrency=args.actors),
        counterfactual=batch_infer.CounterfactualSettings(blank_control=True),
        evaluate=batch_infer.EvaluateStage(enabled=True, aggregate=False),
    )
    return batch_infer.main(cfg)


def table(evaluation: dict[str, Any], key: str = "format") -> list[dict[str, Any]]:
    """One row per run (``key``: its label): the metrics with the closed accuracy's
    interval; a format's row also lists the keys its answers hold."""
    rows = []
    for label, h in evaluation["runs"].items():
        iv = evaluation["intervals"][label].get("closed accuracy") or {}
        row: dict[str, Any] = {key: label}
        if key == "format":
            row["keys"] = list(OUTPUT_FORMATS[label])
        rows.append(
            {
                **row,
                **{m: h.get(m) for m in METRICS},
                "closed accuracy 95%": [iv.get("low"), iv.get("high")] if iv else None,
                "rows": evaluation["rows"],
            }
        )
    return rows


def seed_summary(lines: list[dict[str, Any]], key: str = "format") -> list[dict[str, Any]]:
    """Per (``key``, steps): mean of each metric over seeds and its 95% t-interval (lines
    without ``key``, e.g. paired differences, are left out).

    A seed that appears twice for one (``key``, steps) counts once (its last line)."""
    from scipy import stats

    runs: dict[tuple[str, int], dict[int, dict]] = {}
    for r in lines:
        if key in r:
            runs.setdefault((r[key], int(r["steps"])), {})[int(r["seed"])] = r
    out = []
    for (name, steps), by_seed in runs.items():
        row: dict[str, Any] = {key: name, "steps": steps, "seeds": sorted(by_seed)}
        for m in METRICS:
            xs = np.array([r[m] for r in by_seed.values() if r.get(m) is not None], float)
            if len(xs) == 0:
                continue
            mean = float(xs.mean())
            half = (
                float(stats.t.ppf(0.975, len(xs) - 1) * xs.std(ddof=1) / np.sqrt(len(xs)))
                if len(xs) > 1
                else None
            )
            row[m] = mean
            row[f"{m} 95%"] = [mean - half, mean + half] if half is not None else None
            row[f"{m} per seed"] = xs.tolist()
        out.append(row)
    return out


def print_seed_summary(path: Path, key: str = "format") -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    rows = seed_summary(lines, key)
    print(f"| {key} | steps | seeds | " + " | ".join(f"{m} (mean [95%])" for m in METRICS) + " |")
    print("| --- " * (3 + len(METRICS)) + "|")
    for r in rows:
        cells = []
        for m in METRICS:
            ci = r.get(f"{m} 95%")
            ci_s = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
            cells.append(f"{_fmt(r.get(m))}{ci_s}")
        seeds = ",".join(map(str, r["seeds"]))
        print(f"| {r[key]} | {r['steps']} | {seeds} | " + " | ".join(cells) + " |")
    return rows


def print_table(rows: list[dict[str, Any]], key: str) -> None:
    """The Markdown table of :func:`table`'s rows, first column ``key``."""
    print(f"| {key} | closed accuracy [95%] | JSON validity | box rate | blank-image accuracy |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        ci = r["closed accuracy 95%"]
        ci_s = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else ""
        print(
            f"| {r[key]} | {_fmt(r['closed accuracy'])}{ci_s} | {_fmt(r['JSON validity'])} "
            f"| {_fmt(r['box rate'])} | {_fmt(r['blank-image accuracy'])} |"
        )


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    from medray.paths import medray_home
    from medray.runtime import init_ray

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(medray_home() / "data" / "slake-synth"))
    p.add_argument("--out", default=str(medray_home() / "runs" / "format-ablation"))
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument(
        "--summarise", type=Path, default=None, help="summarise a results file over seeds"
    )
    args = p.parse_args(argv)
    if args.summarise is not None:
        return print_seed_summary(args.summarise)

    init_ray()
    out = Path(args.out)
    data = prepare_data(args.data)
    finals = {fmt: train(data, fmt, args, out) for fmt in OUTPUT_FORMATS}
    s = score(data, finals, args, out)
    rows = table(s["evaluation"])
    print(f"\n=== reasoning-format ablation: {args.steps} steps, seed {args.seed} ===")
    print_table(rows, "format")
    print(f"REPORT: {s['report']}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"format-ablation-{dt.date.today().isoformat()}.jsonl"
    with path.open("a") as f:
        for r in rows:
            f.write(json.dumps({**r, "steps": args.steps, "seed": args.seed}) + "\n")
    print(f"RESULTS: {path}")
    return rows


if __name__ == "__main__":
    main()
