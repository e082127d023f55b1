"""MedRay end-to-end pipeline: the job the demo submits.

The pipeline is an ordered list of named stages (``STAGES``):

    preprocess -> train_clip -> index -> search -> sft_reasoner -> grpo -> summariser_sft
    -> medqa_sft -> batch_infer -> evaluate -> serve

Each stage is a small function ``(ctx) -> dict`` that calls the importable entry point of
one job (``jobs.preprocess``, ``jobs.train_clip``, ``jobs.index``, ``jobs.train_sft``,
``jobs.train_grpo``, ``jobs.batch_infer``, ``jobs.evaluate``) with its sub-config from the
pipeline YAML (``preprocess:``, ``train_clip:``, ...), takes what earlier stages produced
from ``ctx.outputs`` (data folder, CLIP checkpoint, Milvus settings, SFT / GRPO reasoner,
predictions folders) and puts its own products there. ``stages: [...]`` in the config (or
``stages=[preprocess,train_clip]`` on the command line) selects a subset; they always run
in registry order. Every sub-job writes under ``<run dir>/<stage>``.

A stage declares what it needs from earlier stages (``Need``): an output key and the config
field that can stand in for it (e.g. ``grpo`` needs the SFT reasoner: the ``sft_reasoner``
stage's final model, or ``grpo.grpo.init``). A set config field wins; when it is empty an
earlier selected stage must give the output. The plan is checked when the config is
loaded, so a selection that cannot run fails with a message naming the missing stage and
the config field, before Ray starts.

The stage functions live in ``jobs/pipeline_stages/`` (``data``, ``training``, ``inference``,
``serving``; ``context`` holds what they share). The ``serve`` stage deploys the Serve app
with this run's adapters, summariser, CLIP and indexes (``jobs/pipeline_stages/serving.py``).

Adding a stage is a local edit: one ``stage_*`` function, one entry in ``STAGES`` (with its
needs and outputs) and one config section (a field of ``PipelineConfig`` + a section in
``pipeline_tiny.yaml``).

Prints a ``[stage i/n] name: ...`` line as each stage ends (the demo shows only those) and writes the summary (with the evaluation report's path) to
``<storage>/<run.name>/summary.json``.

    python -m jobs.pipeline --config jobs/configs/pipeline_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.batch_infer import BatchInferConfig, InputSettings
from jobs.index import IndexConfig
from jobs.pipeline_stages.context import Context, Need, Stage, config_value
from jobs.pipeline_stages.data import (
    SearchStageConfig,
    stage_index,
    stage_preprocess,
    stage_search,
    stage_train_clip,
)
from jobs.pipeline_stages.inference import (
    EvaluateStageConfig,
    TextInferStageConfig,
    _reasoner_models,
    stage_batch_infer,
    stage_evaluate,
)
from jobs.pipeline_stages.serving import ServeStageConfig, check_serve_plan, stage_serve
from jobs.pipeline_stages.training import (
    stage_grpo,
    stage_medqa_sft,
    stage_sft_reasoner,
    stage_summariser_sft,
)
from jobs.train_clip import TrainClipConfig
from jobs.train_grpo import TrainGRPOConfig
from jobs.train_sft import TrainSFTConfig
from medray.config import ConfigError, parse_args, to_dict
from medray.data.config import PreprocessConfig, SourceSpec
from medray.runtime import setup_logging
from medray.train.settings import RunSettings
from medray.train.sft_recipe import SFTRecipeSettings

__all__ = ["STAGES", "Context", "PipelineConfig", "_reasoner_models", "check_plan", "main"]

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "pipeline_tiny.yaml"


# ---------------------------------------------------------------------------- config


def _demo_sources() -> tuple[SourceSpec, ...]:
    return (
        SourceSpec(kind="mimic-cxr", path="$MEDRAY_HOME/synth/pipeline/mimic-cxr", synth_n=200),
        SourceSpec(kind="vqa-rad", path="$MEDRAY_HOME/synth/pipeline/vqa-rad", synth_n=80),
        SourceSpec(kind="slake", path="$MEDRAY_HOME/synth/pipeline/slake", synth_n=40),
        SourceSpec(kind="medmcqa", path="$MEDRAY_HOME/synth/pipeline/medmcqa", synth_n=200),
    )


@dataclass(frozen=True)
class PipelineConfig:
    """End-to-end pipeline on embedded defaults (tiny models, generated data).

    One section per stage; a stage's section is the config of the job it runs. Input
    fields left empty (``data.input``, ``grpo.init``, ``input.path``, ...) are filled from
    earlier stages' outputs.
    """

    run: RunSettings = field(default_factory=lambda: RunSettings(name="pipeline"))
    stages: tuple[str, ...] = ()  # empty: every stage of STAGES, in order
    # Its output defaults to <run dir>/data; sources with synth_n are generated first.
    preprocess: PreprocessConfig = field(
        default_factory=lambda: PreprocessConfig(sources=_demo_sources(), name="pipeline")
    )
    train_clip: TrainClipConfig = field(default_factory=TrainClipConfig)
    index: IndexConfig = field(default_factory=IndexConfig)
    search: SearchStageConfig = field(default_factory=SearchStageConfig)
    sft_reasoner: TrainSFTConfig = field(default_factory=lambda: TrainSFTConfig(task="reasoner"))
    grpo: TrainGRPOConfig = field(default_factory=TrainGRPOConfig)
    summariser_sft: TrainSFTConfig = field(
        default_factory=lambda: TrainSFTConfig(
            task="summariser", sft=SFTRecipeSettings(model="tiny-lm")
        )
    )
    medqa_sft: TrainSFTConfig = field(
        default_factory=lambda: TrainSFTConfig(task="medqa", sft=SFTRecipeSettings(model="tiny-lm"))
    )
    batch_infer: BatchInferConfig = field(
        default_factory=lambda: BatchInferConfig(input=InputSettings(path=""))
    )
    batch_infer_text: TextInferStageConfig = field(default_factory=TextInferStageConfig)
    evaluate: EvaluateStageConfig = field(default_factory=EvaluateStageConfig)
    serve: ServeStageConfig = field(default_factory=ServeStageConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(
                f"unknown stage {unknown[0]!r} in `stages`; valid stages: {', '.join(STAGES)}"
            )
        for section, task in (
            ("sft_reasoner", "reasoner"),
            ("summariser_sft", "summariser"),
            ("medqa_sft", "medqa"),
        ):
            if getattr(self, section).task != task:
                raise ConfigError(
                    f"{section}.task must be {task!r}, got {getattr(self, section).task!r}"
                )
        if self.batch_infer.evaluate.enabled:
            raise ConfigError(
                "batch_infer.evaluate.enabled must be false in the pipeline: the evaluate "
                "stage evaluates the predictions and writes the report"
            )
        check_plan(self)

    def serve_notes(self) -> list[str]:
        """What the ``serve`` stage will deploy, role by role (empty when not selected);
        raises ``ConfigError`` for an adapter on another base model (by name)."""
        chosen = selected_stages(self)
        return check_serve_plan(self, chosen) if "serve" in chosen else []


def check_plan(cfg: PipelineConfig) -> None:
    """Every selected stage's needs are met by its config or by an earlier selected stage.

    Raises:
        ConfigError: naming the stage, what it needs, the stage that gives it and the
            config field that can stand in for it.
    """
    given: set[str] = set()
    for name in selected_stages(cfg):
        stage = STAGES[name]
        for n in stage.needs:
            if n.when and not config_value(cfg, n.when):
                continue
            if n.key in given or (n.fallback and config_value(cfg, n.fallback)):
                continue
            givers = [s for s, st in STAGES.items() if n.key in st.gives]
            how = f"add {' or '.join(repr(g) for g in givers)} to `stages`"
            raise ConfigError(
                f"stage {name!r} needs {n.key!r} from an earlier stage: {how}"
                + (f" or set {n.fallback}" if n.fallback else "")
            )
        given |= set(stage.gives)
    cfg.serve_notes()


# The line printed as each stage ends starts with this (the demo echoes those lines only).
STAGE_MARK = "[stage "

# The pipeline, in order. Add a stage here (and a section in PipelineConfig + the YAML).
STAGES: dict[str, Stage] = {
    "preprocess": Stage(stage_preprocess, gives=("data",)),
    "train_clip": Stage(
        stage_train_clip, needs=(Need("data", "train_clip.data.input"),), gives=("clip_model",)
    ),
    "index": Stage(
        stage_index,
        needs=(Need("data", "index.cases.input", when="index.cases.enabled"),),
        gives=("milvus",),
    ),
    "search": Stage(stage_search),
    "sft_reasoner": Stage(
        stage_sft_reasoner,
        needs=(Need("data", "sft_reasoner.data.input"),),
        gives=("reasoner_sft",),
    ),
    "grpo": Stage(
        stage_grpo,
        needs=(Need("data", "grpo.data.input"), Need("reasoner_sft", "grpo.grpo.init")),
        gives=("reasoner_grpo",),
    ),
    "summariser_sft": Stage(
        stage_summariser_sft,
        needs=(Need("data", "summariser_sft.data.input"),),
        gives=("summariser",),
    ),
    "medqa_sft": Stage(
        stage_medqa_sft,
        needs=(Need("data", "medqa_sft.data.input"),),
        gives=("medqa",),
    ),
    "batch_infer": Stage(
        stage_batch_infer,
        needs=(Need("data", "batch_infer.input.path"),),
        gives=("predictions", "text_predictions"),
    ),
    "evaluate": Stage(
        stage_evaluate, needs=(Need("predictions"),), gives=("report", "text_reports")
    ),
    "serve": Stage(stage_serve, gives=("serve",)),
}


def selected_stages(cfg: PipelineConfig) -> list[str]:
    """The stages to run, in registry order (names are checked by ``PipelineConfig``)."""
    chosen = set(cfg.stages) or set(STAGES)
    return [s for s in STAGES if s in chosen]


# ------------------------------------------------------------------------------ main


def main(cfg: PipelineConfig) -> dict[str, Any]:
    import ray

    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path

    names = selected_stages(cfg)
    for note in cfg.serve_notes():
        print(f"serve plan: {note}", flush=True)
    init_ray()
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg=cfg, out_dir=out_dir)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names, 1):
        t = time.perf_counter()
        print(f"\n--- stage {name} ---", flush=True)
        results[name] = STAGES[name].run(ctx)
        results[name]["stage_seconds"] = round(time.perf_counter() - t, 1)
        print(
            f"{STAGE_MARK}{i}/{len(names)}] {name} {results[name]['stage_seconds']:.1f}s: "
            f"{results[name]['line']}",
            flush=True,
        )
    nodes: set[str] = set()
    for r in results.values():
        nodes |= set(r.get("nodes_used", []))
    summary = {
        "run": cfg.run.name,
        "output_dir": str(out_dir),
        "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
        "stages": results,
        "outputs": {
            k: (to_dict(v) if dataclasses.is_dataclass(v) else v) for k, v in ctx.outputs.items()
        },
        "nodes_used": sorted(nodes),
        "report": ctx.outputs.get("report"),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    print_summary(summary)
    return summary


def print_summary(s: dict[str, Any]) -> None:
    print("\n=== MedRay pipeline summary ===")
    width = max((len(n) for n in s["stages"]), default=0)
    for name, r in s["stages"].items():
        print(f"{name:<{width}}  {r['stage_seconds']:6.1f}s  {r['line']}")
    print(f"nodes used: {len(s['nodes_used'])} of {s['cluster_nodes']}; total {s['seconds']}s")
    if s.get("report"):
        print(f"REPORT: {s['report']}")
    print(f"RESULTS: {s['output_dir']}/summary.json")


if __name__ == "__main__":
    setup_logging()
    main(
        parse_args(
            PipelineConfig,
            sys.argv[1:],
            prog="python -m jobs.pipeline",
            default_config=DEFAULT_CONFIG,
        )
    )
