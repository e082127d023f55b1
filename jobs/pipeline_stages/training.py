"""Training stages: sft_reasoner, grpo, summariser_sft, medqa_sft (each calls its job's
entry point)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobs.pipeline_stages.context import Context
from jobs.train_sft import TrainSFTConfig


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _workers_line(scaling, deepspeed) -> str:
    zero = f"ZeRO-{deepspeed.zero_stage}" if deepspeed.enabled else "no DeepSpeed"
    return f"x{scaling.num_workers} workers ({zero})"


def _run_sft(ctx: Context, stage: str) -> tuple[TrainSFTConfig, dict[str, Any]]:
    """``jobs.train_sft`` with the stage's section, on the pipeline's data, under its run dir."""
    from jobs import train_sft

    sub: TrainSFTConfig = ctx.training_config(stage)
    s = train_sft.run(sub)
    if not s["final_checkpoint"]:
        raise RuntimeError(f"stage {stage!r}: the SFT job reported no final model")
    return sub, s


def _sft_result(sub: TrainSFTConfig, s: dict[str, Any], scores: str) -> dict[str, Any]:
    line = (
        f"{sub.sft.model} {s['training_mode']} {_workers_line(sub.scaling, sub.sft.deepspeed)}, "
        f"{s['steps']} steps on {s['rows']['train']['usable']} rows, loss "
        f"{_fmt(s['loss_first'])} -> {_fmt(s['loss_last'])}"
    )
    return {
        "final_model": s["final_checkpoint"],
        "training_mode": s["training_mode"],
        "rows": s["rows"],
        "steps": s["steps"],
        "resumed_from_step": s["resumed_from_step"],
        "loss_first": s["loss_first"],
        "loss_last": s["loss_last"],
        "eval": s["eval"],
        "workers": s["workers"],
        "nodes_used": sorted({w["node_id"] for w in s["workers"]}),
        "seconds": s["seconds"],
        "line": line + (f"; held-out {scores}" if scores else ""),
    }


def _sft_stage(
    ctx: Context, stage: str, output: str, scores: Callable[[dict], str]
) -> dict[str, Any]:
    """An SFT stage: run it, hand its final model on as ``output``, and its summary line
    with ``scores(eval)`` when the job evaluated."""
    sub, s = _run_sft(ctx, stage)
    ctx.outputs[output] = s["final_checkpoint"]
    return _sft_result(sub, s, scores(s["eval"]) if s["eval"] else "")


def stage_sft_reasoner(ctx: Context) -> dict[str, Any]:
    """``jobs.train_sft`` (task reasoner): LoRA SFT of the tiny Qwen2-VL on the VQA rows."""
    return _sft_stage(
        ctx,
        "sft_reasoner",
        "reasoner_sft",
        lambda ev: (
            f"closed accuracy {_fmt(ev.get('closed_accuracy'))}, JSON validity "
            f"{_fmt(ev.get('json_validity'))} ({ev.get('n')} rows)"
        ),
    )


def stage_grpo(ctx: Context) -> dict[str, Any]:
    """``jobs.train_grpo``: GRPO of the reasoner, starting from the SFT reasoner."""
    from jobs import train_grpo

    sec = ctx.cfg.grpo.grpo
    sub = ctx.training_config(
        "grpo", grpo=dataclasses.replace(sec, init=ctx.need("grpo", "reasoner_sft"))
    )
    s = train_grpo.run(sub)
    if not s["final_model"]:
        raise RuntimeError("stage 'grpo': the GRPO job reported no final model")
    ctx.outputs["reasoner_grpo"] = s["final_model"]
    line = (
        f"{sub.grpo.model} from {Path(sub.grpo.init).name} "
        f"{_workers_line(sub.scaling, sub.grpo.deepspeed)}, {s['steps']} steps x "
        f"{sub.grpo.num_generations} generations, train reward {_fmt(s['reward_first'])} -> "
        f"{_fmt(s['reward_last'])} ({s['rows_with_boxes'][sub.data.train_split]} of "
        f"{s['rows'][sub.data.train_split]} train rows with boxes)"
    )
    ev = s.get("eval")
    if ev:
        line += (
            f"; held-out reward SFT {_fmt(ev['sft'].get('reward'))} -> GRPO "
            f"{_fmt(ev['grpo'].get('reward'))}"
        )
    return {
        "final_model": s["final_model"],
        "start_policy": s["start_policy"],
        "rows": s["rows"],
        "rows_with_boxes": s["rows_with_boxes"],
        "steps": s["steps"],
        "resumed_from_step": s["resumed_from_step"],
        "reward_first": s["reward_first"],
        "reward_last": s["reward_last"],
        "eval": ev,
        "workers": s["workers"],
        "nodes_used": sorted({w["node_id"] for w in s["workers"]}),
        "seconds": s["seconds"],
        "line": line,
    }


def stage_summariser_sft(ctx: Context) -> dict[str, Any]:
    """``jobs.train_sft`` (task summariser): step-wise findings -> short impression."""
    return _sft_stage(
        ctx,
        "summariser_sft",
        "summariser",
        lambda ev: (
            f"ROUGE-L {_fmt(ev.get('rougeL'))} (copy-the-input baseline "
            f"{_fmt(ev.get('copy_input_rougeL'))}), BLEU {_fmt(ev.get('bleu'))} ({ev.get('n')} reports)"
        ),
    )


def stage_medqa_sft(ctx: Context) -> dict[str, Any]:
    """``jobs.train_sft`` (task medqa): the text medical-QA model ``POST /generate`` serves,
    trained on the MedMCQA rows (answer letter + explanation)."""
    return _sft_stage(
        ctx,
        "medqa_sft",
        "medqa",
        lambda ev: (
            f"MCQ accuracy {_fmt(ev.get('accuracy'))} (majority answer "
            f"{_fmt(ev.get('majority_rate'))}), answered {_fmt(ev.get('answered_rate'))} "
            f"({ev.get('n')} questions)"
        ),
    )
