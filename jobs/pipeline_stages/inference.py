"""Inference stages: batch_infer (the reasoners over the held-out rows, and the text models
this run trained over theirs) and evaluate (one report per group of rows)."""

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


@dataclass(frozen=True)
class TextInferStageConfig:
    """Batch inference of the text models this run trained (the summariser_sft and medqa_sft
    stages' final models) over the held-out rows their SFT section names (``data.eval_split``,
    ``data.limit_eval``), with the batch_infer section's actor pool; the evaluate stage
    reports them beside the reasoners (``<run dir>/evaluate_<task>``)."""

    enabled: bool = True
    limit: int = 0  # rows per task; 0: the SFT section's data.limit_eval (0 there: all)


# Text task -> the ctx.outputs key of the stage that trains its model.
TEXT_MODELS = {"summariser": "summariser", "medqa": "medqa"}


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
    text = _text_batch_infer(ctx) if ctx.cfg.batch_infer_text.enabled else {}
    ctx.outputs["predictions"] = {
        "folders": s["predictions"],
        "dataset": s["dataset"],
        "split": s["split"],
        "fingerprint": s["fingerprint"],
    }
    valid = ", ".join(f"{label} {m['json_valid']:.2f}" for label, m in s["models"].items())
    errors = sum(m["errors"] for m in s["models"].values())
    text_line = "".join(
        f"; {task}: {t['input_rows']} {t['split']} rows, {sum(m['errors'] for m in t['models'].values())} errors"
        for task, t in text.items()
    )
    return {
        "output_dir": s["output_dir"],
        "predictions": s["predictions"],
        "split": s["split"],
        "input_rows": s["input_rows"],
        "models": s["models"],
        "rows_per_node": s["rows_per_node"],
        "rows_per_s": s["rows_per_s"],
        "seconds": s["total_seconds"] + sum(t["total_seconds"] for t in text.values()),
        "text_models": {task: _text_summary(t) for task, t in text.items()},
        "line": f"{s['input_rows']} {s['split']} rows x {len(s['models'])} models "
        f"({', '.join(s['models'])}) on {len(s['rows_per_node'])} nodes, "
        f"{s['rows_per_s']} rows/s, {errors} errors; JSON valid: {valid}{text_line}",
    }


def _text_batch_infer(ctx: Context) -> dict[str, dict[str, Any]]:
    """``jobs.batch_infer`` (task summariser / medqa) of each text model this run trained,
    over its SFT section's held-out rows -> ``ctx.outputs["text_predictions"][task]``."""
    from jobs import batch_infer
    from medray.models.finetuned import describe

    out: dict[str, dict[str, Any]] = {}
    for task, key in TEXT_MODELS.items():
        folder = ctx.outputs.get(key)
        if not folder:
            continue  # its SFT stage did not run in this pipeline
        section = getattr(ctx.cfg, f"{task}_sft")
        src = describe(folder, "lm")
        base = ctx.cfg.batch_infer
        sub = dataclasses.replace(
            base,
            name=f"batch-infer-{task}",
            task=task,
            output=str(ctx.out_dir / f"batch_infer_{task}"),
            input=dataclasses.replace(
                base.input,
                path=ctx.need("batch_infer", "data"),
                split=section.data.eval_split,
                tasks=(),
                limit=ctx.cfg.batch_infer_text.limit or section.data.limit_eval,
            ),
            models=(ModelSettings(label="sft", model=src.base, adapter=src.adapter or ""),),
            counterfactual=batch_infer.CounterfactualSettings(),
            generation=batch_infer.GenerationSettings(),
            evaluate=batch_infer.EvaluateStage(),
        )
        out[task] = batch_infer.main(sub)
    ctx.outputs["text_predictions"] = {
        task: {
            "folders": s["predictions"],
            "dataset": s["dataset"],
            "split": s["split"],
            "fingerprint": s["fingerprint"],
        }
        for task, s in out.items()
    }
    return out


def _text_summary(s: dict[str, Any]) -> dict[str, Any]:
    keys = ("output_dir", "predictions", "split", "input_rows", "models", "rows_per_node")
    return {k: s[k] for k in keys} | {"seconds": s["total_seconds"]}


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
    text = {
        task: _evaluate_text(ctx, task, tp)
        for task, tp in ctx.outputs.get("text_predictions", {}).items()
    }
    ctx.outputs["text_reports"] = {task: t["report"] for task, t in text.items()}
    text_line = "".join(f"; {t['line']}" for t in text.values())
    return {
        "report": s["report"],
        "text_reports": {task: t["report"] for task, t in text.items()},
        "text_runs": {task: t["runs"] for task, t in text.items()},
        "report_json": s["report_json"],
        "plots": s["plots"],
        "rows": s["rows"],
        "runs": s["runs"],
        "intervals": s["intervals"],
        "paired": s["paired"],
        "seconds": s["seconds"],
        "line": f"{s['rows']} held-out rows: {acc}; {len(s['plots'])} plots -> {s['report']}"
        + text_line,
    }


def _evaluate_text(ctx: Context, task: str, p: dict[str, Any]) -> dict[str, Any]:
    """``jobs.evaluate`` on a text model's predictions -> ``<run dir>/evaluate_<task>``."""
    from jobs import evaluate

    s = evaluate.main(
        evaluate.config_for(
            p["folders"],
            dataset=p["dataset"],
            split=p["split"],
            fingerprint=p["fingerprint"],
            output=str(ctx.out_dir / f"evaluate_{task}"),
            aggregate=False,
            metrics=ctx.cfg.evaluate.metrics,
        )
    )
    ((label, h),) = s["runs"].items()
    if task == "medqa":
        figures = (
            f"MCQ accuracy {_fmt(h.get('MCQ accuracy'))}"
            f"{_ci(s['intervals'][label].get('MCQ accuracy'))}"
        )
    else:
        figures = f"ROUGE-L {_fmt(h.get('ROUGE-L'))}, BLEU {_fmt(h.get('BLEU'))}"
    line = (
        f"{task} ({s['rows']} {p['split']} rows): {figures}, perplexity {_fmt(h.get('perplexity'))}"
    )
    return {"report": s["report"], "runs": s["runs"], "line": line}
