"""The reasoner's headline figures under the evaluation protocol (issue 21, point 6): SFT
then GRPO by their recipes with one seed, both scored once on the test split with the
blank-image control, GRPO against SFT as a paired per-row bootstrap; repeated over seeds,
``--summarise`` gives each figure's mean over the seeds with a 95% t-interval.

    python -m benchmarks.headline --seed 0          # the recipes' lengths: ~70 min on 2 cores
    python -m benchmarks.headline --seed 1 --out $MEDRAY_HOME/runs/headline-s1
    python -m benchmarks.headline --sft-steps 2 --grpo-steps 1 --limit-train 16 --limit-test 4   # smoke test
    python -m benchmarks.headline --summarise benchmarks/results/headline-<date>.jsonl

What runs (the project's own jobs, in process, on a local Ray cluster unless
``RAY_ADDRESS`` is set):

1. ``jobs.preprocess`` (synthetic SLAKE) when ``--data`` holds no preprocessed output;
2. ``jobs.train_sft`` with ``jobs/configs/sft_reasoner_synth.yaml`` (seed ``--seed``; its
   validation evaluation off: the recipe was chosen there already);
3. ``jobs.train_grpo`` with ``jobs/configs/grpo_reasoner_synth.yaml`` from that SFT model
   (same seed, its validation evaluation off);
4. ``jobs.batch_infer`` of both over the test split with the blank-image control, then
   ``jobs.evaluate``: closed accuracy with its interval, JSON validity, box rate,
   blank-image accuracy, and GRPO - SFT paired over the same rows.

Appends one JSON line per model (``sft``, ``grpo``) and one per paired difference to
``benchmarks/results/headline-<date>.jsonl``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path
from typing import Any

from benchmarks.format_ablation import (
    ROOT,
    prepare_data,
    print_table,
    run_recipe,
    score,
    table,
    train_sft,
)

# accuracy and open accuracy since 2026-12-08 (seed 0's lines lack them, its report holds
# them): closed accuracy alone reached its ceiling (0.998) at the recipes' length.
PAIRED = ("closed accuracy", "accuracy", "open accuracy", "JSON validity", "blank-image accuracy")


def train_grpo(data: str, sft: str, args: argparse.Namespace, out: Path) -> str:
    """The GRPO recipe from ``sft`` with ``args.seed``; its final model folder."""
    from jobs import train_grpo as job

    overrides = [
        f"run.name=headline_grpo_s{args.seed}",
        f"run.storage_path={out}",
        f"data.input={data}",
        f"data.max_train_rows={args.limit_train}",
        f"grpo.init={sft}",
        f"grpo.optim.seed={args.seed}",
        "eval.enabled=false",
    ]
    if args.grpo_steps:
        overrides.append(f"grpo.optim.max_steps={args.grpo_steps}")
    return run_recipe(
        job, job.TrainGRPOConfig, "grpo_reasoner_synth.yaml", overrides, "final_model"
    )


def paired_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """GRPO - SFT on each ``PAIRED`` metric: delta with its paired-bootstrap interval."""
    out = []
    for pair in evaluation["paired"]:
        for m in PAIRED:
            d = pair["metrics"].get(m)
            if d:
                out.append(
                    {
                        "pair": f"{pair['b']} - {pair['a']}",
                        "metric": m,
                        **{k: d[k] for k in ("n", "a", "b", "delta", "low", "high")},
                    }
                )
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    from benchmarks.format_ablation import print_seed_summary
    from medray.paths import medray_home
    from medray.runtime import init_ray

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default=str(medray_home() / "data" / "slake-synth"))
    p.add_argument("--out", default=str(medray_home() / "runs" / "headline"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sft-steps", type=int, default=0, help="0: the recipe's (1,000)")
    p.add_argument("--grpo-steps", type=int, default=0, help="0: the recipe's (150)")
    p.add_argument("--limit-train", type=int, default=0)
    p.add_argument("--limit-test", type=int, default=0)
    p.add_argument("--actors", type=int, default=2)
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--summarise", type=Path, default=None, help="summarise a results file")
    args = p.parse_args(argv)
    if args.summarise is not None:
        return {"models": print_seed_summary(args.summarise, key="model")}

    init_ray()
    out = Path(args.out)
    data = prepare_data(args.data)
    steps = [f"sft.optim.max_steps={args.sft_steps}"] if args.sft_steps else []
    sft = train_sft(data, out, f"headline_sft_s{args.seed}", args, *steps)
    grpo = train_grpo(data, sft, args, out)
    s = score(data, {"sft": sft, "grpo": grpo}, args, out)
    models = table(s["evaluation"], key="model")
    pairs = paired_rows(s["evaluation"])
    print(f"\n=== headline: seed {args.seed} ===")
    print_table(models, "model")
    for d in pairs:
        print(
            f"{d['pair']}, {d['metric']}, paired over {d['n']} rows: "
            f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]"
        )
    print(f"REPORT: {s['report']}")
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"headline-{dt.date.today().isoformat()}.jsonl"
    with path.open("a") as f:
        for r in [*models, *pairs]:
            # steps / grpo_steps 0: the recipes' lengths (--summarise groups by steps).
            line = {**r, "steps": args.sft_steps, "grpo_steps": args.grpo_steps, "seed": args.seed}
            f.write(json.dumps(line) + "\n")
    print(f"RESULTS: {path}")
    return {"models": models, "paired": pairs}


if __name__ == "__main__":
    main()
