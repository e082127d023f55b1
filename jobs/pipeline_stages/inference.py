"""Inference stages: batch_infer (the reasoners over the held-out rows) and evaluate."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from jobs.batch_infer import ModelSettings
from jobs.pipeline_stages.context import Context
from jobs.pipeline_stages.training import _fmt
from medray.config import ConfigError
from medray.eval.metrics import EvalSettings


@dataclass(frozen=True)
class EvaluateStageConfig:
    """``jobs.evaluate`` on the batch_infer stage's predictions folders (checked against
    that run's dataset, split, models and rows); the report goes to ``<run dir>/evaluate``."""

    aggregate: bool = True  # add the confidence-weighted vote when there are 2+ models
    metrics: EvalSettings = field(default_factory=EvalSettings)


def _reasoner_models(ctx: Context) -> list[ModelSettings]:
    """The configured models plus the SFT and GRPO reasoners this run trained (labels
    ``sft`` and ``grpo``), each as base model + adapter (or a full checkpoint)."""
    from medray.train.grpo import policy_source

    models = list(ctx.cfg.batch_infer.models)
    for label, key in (("sft", "reasoner_sft"), ("grpo", "reasoner_grpo")):
        folder = ctx.outputs.get(key)
        if not folder:
            continue
        if any(m.label == label for m in models):
            raise ConfigError(
                f"batch_infer.models already has a model labelled {label!r}; that label is "
                f"the {key} stage's model: rename yours"
            )
        # policy_source knows where an adapter's base is (its medray_final.json).
        base, adapter = policy_source(dataclasses.replace(ctx.cfg.grpo.grpo, init=folder))
        models.append(ModelSettings(label=label, model=base, adapter=adapter or ""))
    return models


def stage_batch_infer(ctx: Context) -> dict[str, Any]:
    """``jobs.batch_infer``: the reasoners (base, SFT, GRPO) over the held-out VQA rows, as a
    pool of Ray Data model actors spread over the nodes -> one predictions folder each."""
    from jobs import batch_infer

    sub = ctx.cfg.batch_infer
    sub = dataclasses.replace(
        sub,
        output=sub.output or str(ctx.out_dir / "batch_infer"),
        input=dataclasses.replace(sub.input, path=ctx.need("batch_infer", "data")),
        models=tuple(_reasoner_models(ctx)),
    )
    s = batch_infer.main(sub)
    ctx.outputs["predictions"] = {
        "folders": s["predictions"],
        "dataset": s["dataset"],
        "split": s["split"],
        "fingerprint": s["fingerprint"],
    }
    valid = ", ".join(f"{label} {m['json_valid']:.2f}" for label, m in s["models"].items())
    errors = sum(m["errors"] for m in s["models"].values())
    return {
        "output_dir": s["output_dir"],
        "predictions": s["predictions"],
        "split": s["split"],
        "input_rows": s["input_rows"],
        "models": s["models"],
        "rows_per_node": s["rows_per_node"],
        "rows_per_s": s["rows_per_s"],
        "seconds": s["total_seconds"],
        "line": f"{s['input_rows']} {s['split']} rows x {len(s['models'])} models "
        f"({', '.join(s['models'])}) on {len(s['rows_per_node'])} nodes, "
        f"{s['rows_per_s']} rows/s, {errors} errors; JSON valid: {valid}",
    }


def _ci(iv: dict[str, Any] | None) -> str:
    return f" [{iv['low']:.3f}, {iv['high']:.3f}]" if iv else ""


def stage_evaluate(ctx: Context) -> dict[str, Any]:
    """``jobs.evaluate`` on the batch_infer predictions -> the report (Markdown + plots)."""
    from jobs import evaluate

    p = ctx.need("evaluate", "predictions")
    sc = ctx.cfg.evaluate
    ecfg = evaluate.config_for(
        p["folders"],
        dataset=p["dataset"],
        split=p["split"],
        fingerprint=p["fingerprint"],
        output=str(ctx.out_dir / "evaluate"),
        aggregate=sc.aggregate and len(p["folders"]) > 1,
        metrics=sc.metrics,
    )
    s = evaluate.main(ecfg)
    ctx.outputs["report"] = s["report"]
    acc = "; ".join(
        f"{label} closed accuracy {_fmt(h.get('closed accuracy'))}"
        f"{_ci(s['intervals'][label].get('closed accuracy'))}, blank-image accuracy "
        f"{_fmt(h.get('blank-image accuracy'))} (all rows), JSON validity "
        f"{_fmt(h.get('JSON validity'))}"
        for label, h in s["runs"].items()
    )
    for pair in s["paired"]:  # each run against the one before it, on the same rows
        d = pair["metrics"].get("closed accuracy")
        if d:
            acc += (
                f"; {pair['b']} - {pair['a']} closed accuracy {d['delta']:+.3f} "
                f"[{d['low']:+.3f}, {d['high']:+.3f}] (paired, {d['n']} rows)"
            )
    return {
        "report": s["report"],
        "report_json": s["report_json"],
        "plots": s["plots"],
        "rows": s["rows"],
        "runs": s["runs"],
        "intervals": s["intervals"],
        "paired": s["paired"],
        "seconds": s["seconds"],
        "line": f"{s['rows']} held-out rows: {acc}; {len(s['plots'])} plots -> {s['report']}",
    }
