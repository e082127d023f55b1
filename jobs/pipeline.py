"""MedRay end-to-end pipeline: the job the demo submits.

The pipeline is an ordered list of named stages (``STAGES``):

    preprocess -> train_clip -> index -> search -> sft_reasoner -> grpo -> summariser_sft
    -> batch_infer -> evaluate

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

Adding a stage is a local edit: one ``stage_*`` function, one entry in ``STAGES`` (with its
needs and outputs) and one config section (a field of ``PipelineConfig`` + a section in
``pipeline_tiny.yaml``).

Prints one line per stage and writes the summary (with the evaluation report's path) to
``<storage>/<run.name>/summary.json``.

    python -m jobs.pipeline --config jobs/configs/pipeline_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobs.batch_infer import BatchInferConfig, InputSettings, ModelSettings
from jobs.index import IndexConfig
from jobs.train_clip import TrainClipConfig
from jobs.train_grpo import TrainGRPOConfig
from jobs.train_sft import TrainSFTConfig
from medray.config import ConfigError, parse_args, to_dict
from medray.data.config import PreprocessConfig, SourceSpec
from medray.eval.metrics import EvalSettings
from medray.runtime import setup_logging
from medray.train.settings import RunSettings
from medray.train.sft_recipe import SFTRecipeSettings

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "pipeline_tiny.yaml"


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SearchStageConfig:
    """Queries run against the indexed collections; the top hits are printed (ids, scores,
    labels or titles only)."""

    k: int = 3
    text_queries: tuple[str, ...] = ("pleural effusion", "enlarged cardiac silhouette")
    knowledge_queries: tuple[str, ...] = ("how is a tension pneumothorax treated",)


@dataclass(frozen=True)
class EvaluateStageConfig:
    """``jobs.evaluate`` on the batch_infer stage's predictions folders (checked against
    that run's dataset, split, models and rows); the report goes to ``<run dir>/evaluate``."""

    aggregate: bool = True  # add the confidence-weighted vote when there are 2+ models
    metrics: EvalSettings = field(default_factory=EvalSettings)


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
    batch_infer: BatchInferConfig = field(
        default_factory=lambda: BatchInferConfig(input=InputSettings(path=""))
    )
    evaluate: EvaluateStageConfig = field(default_factory=EvaluateStageConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(
                f"unknown stage {unknown[0]!r} in `stages`; valid stages: {', '.join(STAGES)}"
            )
        for section, task in (("sft_reasoner", "reasoner"), ("summariser_sft", "summariser")):
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


def config_value(cfg: PipelineConfig, path: str) -> Any:
    """The value of a dotted config field, e.g. ``grpo.grpo.init``."""
    return functools.reduce(getattr, path.split("."), cfg)


# --------------------------------------------------------------------------- context


@dataclass(frozen=True)
class Need:
    """An input a stage takes from an earlier stage's ``ctx.outputs[key]``, unless the
    config field ``fallback`` (dotted, e.g. ``grpo.grpo.init``) is set; only while the
    bool config field ``when`` is true (empty: always)."""

    key: str
    fallback: str = ""  # empty: only an earlier stage can give it
    when: str = ""


@dataclass(frozen=True)
class Stage:
    """One pipeline stage: the function that runs it, what it needs and what it gives."""

    run: Callable[[Context], dict[str, Any]]
    needs: tuple[Need, ...] = ()
    gives: tuple[str, ...] = ()


@dataclass
class Context:
    """What stages share: the config, the run folder, and what earlier stages produced.

    ``outputs`` keys (see ``gives`` in ``STAGES``): ``data`` (preprocessed Parquet folder),
    ``clip_model`` (fine-tuned open_clip folder), ``milvus`` (``MilvusSettings`` of the
    indexed collections), ``reasoner_sft`` / ``reasoner_grpo`` (the reasoner's final model
    folders: LoRA adapters or full checkpoints), ``summariser`` (its final model folder),
    ``predictions`` (batch inference: predictions folder per model label, dataset, split,
    fingerprint), ``report`` (the evaluation report, ``report.md``).
    """

    cfg: PipelineConfig
    out_dir: Path
    outputs: dict[str, Any] = field(default_factory=dict)

    def need(self, stage: str, key: str) -> Any:
        """Input ``key`` of ``stage``: its config field when set, else the earlier stage's
        output (``check_plan`` has made sure one of them is there)."""
        n = next(n for n in STAGES[stage].needs if n.key == key)
        value = config_value(self.cfg, n.fallback) if n.fallback else None
        if value:
            return value
        if not self.outputs.get(key):
            raise ConfigError(
                f"stage {stage!r} needs {key!r}, which no earlier stage produced"
                + (f"; set {n.fallback}" if n.fallback else "")
            )
        return self.outputs[key]

    def sub_run(self, run: RunSettings, stage: str) -> RunSettings:
        """A sub-job's run settings: stored under this pipeline's run folder as ``<stage>``
        unless its section names its own storage."""
        if run.storage_path:
            return run
        return dataclasses.replace(
            run, storage_path=str(self.out_dir), name=stage, max_failures=self.cfg.run.max_failures
        )

    def training_config(self, stage: str, **changes: Any) -> Any:
        """A training stage's section (``train_clip``, ``sft_*``, ``grpo``) ready to run:
        its run stored under this pipeline's folder (:meth:`sub_run`), its data the
        pipeline's (:meth:`need`), plus ``changes`` to other top-level fields."""
        sub = getattr(self.cfg, stage)
        return dataclasses.replace(
            sub,
            run=self.sub_run(sub.run, stage),
            data=dataclasses.replace(sub.data, input=self.need(stage, "data")),
            **changes,
        )


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


# ---------------------------------------------------------------------------- stages


def stage_preprocess(ctx: Context) -> dict[str, Any]:
    """Synthetic datasets in their real layouts (generated on first use) -> ``jobs.preprocess``."""
    from jobs import preprocess

    pre_cfg = ctx.cfg.preprocess
    if not pre_cfg.output:
        pre_cfg = dataclasses.replace(pre_cfg, output=str(ctx.out_dir / "data"))
    pre = preprocess.run(pre_cfg)
    preprocess.print_summary(pre)
    ctx.outputs["data"] = pre["output"]
    c = pre["counts"]
    splits = ", ".join(f"{k} {v}" for k, v in sorted(pre["per_split"].items()))
    return {
        "output": pre["output"],
        "counts": c,
        "per_split": pre["per_split"],
        "per_task": pre["per_task"],
        "generated_sources": pre["generated_sources"],
        "nodes_used": pre["nodes_used"],
        "seconds": pre["seconds"]["total"],
        "line": f"{c['in']} records -> {c['written']} rows ({splits}), {c['quarantined']} "
        f"quarantined, {c['duplicates']} duplicates, on {len(pre['nodes_used'])} nodes "
        f"-> {pre['output']}",
    }


def stage_train_clip(ctx: Context) -> dict[str, Any]:
    """``jobs.train_clip`` on the preprocessed image-report pairs: zero-shot vs fine-tuned."""
    from jobs import train_clip

    sub = ctx.training_config("train_clip")
    s = train_clip.main(sub)
    ctx.outputs["clip_model"] = s["best_model"]
    zs, ft = s["zero_shot"], s["fine_tuned"]
    return {
        "best_model": s["best_model"],
        "epochs": s["epochs"],
        "history": s["history"],
        "zero_shot": zs,
        "fine_tuned": ft,
        "workers": s["workers"],
        "nodes_used": sorted({w["node_id"] for w in s["workers"]}),
        "seconds": s["seconds"],
        "line": f"{sub.clip.model} x{sub.scaling.num_workers} workers "
        f"(ZeRO-{sub.clip.deepspeed.zero_stage}), {s['epochs']} epochs; test image->text R@1 "
        f"{zs['i2t_R@1']:.3f} zero-shot -> {ft['i2t_R@1']:.3f} fine-tuned, R@5 "
        f"{zs['i2t_R@5']:.3f} -> {ft['i2t_R@5']:.3f} ({ft['n_images']} images)",
    }


def stage_index(ctx: Context) -> dict[str, Any]:
    """``jobs.index``: cases (with the CLIP just trained, if any) + knowledge into Milvus."""
    from jobs import index

    sub = ctx.cfg.index
    cases = sub.cases
    if cases.enabled:
        cases = dataclasses.replace(
            cases,
            input=ctx.need("index", "data"),
            clip_model=ctx.outputs.get("clip_model", cases.clip_model),
        )
    sub = dataclasses.replace(sub, run=ctx.sub_run(sub.run, "index"), cases=cases)
    s = index.main(sub)
    ctx.outputs["milvus"] = dataclasses.replace(sub.milvus, uri=s["milvus_uri"])
    parts = []
    if "cases" in s:
        c = s["cases"]
        parts.append(
            f"{c['rows_indexed']} cases into {c['collection']!r} ({c['error_count']} unreadable), "
            f"first query {c['first_query_s'] * 1000:.0f} ms, steady {c['steady_query_s'] * 1000:.0f} ms"
        )
    if "knowledge" in s:
        k = s["knowledge"]
        parts.append(f"{k['chunks']} knowledge chunks into {k['collection']!r}")
    return {
        "milvus_uri": s["milvus_uri"],
        "cases": s.get("cases"),
        "knowledge": s.get("knowledge"),
        "seconds": s["seconds"],
        "line": "; ".join(parts) + f" at {s['milvus_uri']}",
    }


def stage_search(ctx: Context) -> dict[str, Any]:
    """Text->image and knowledge searches against the indexed collections."""
    from medray.retrieval.search import Searcher

    sc = ctx.cfg.search
    settings = ctx.outputs.get("milvus") or ctx.cfg.index.milvus
    searcher = Searcher(settings)
    t = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    print("\n=== MedRay search ===")
    for q in sc.text_queries:
        hits = searcher.text_to_image(q, k=sc.k)
        results[f"text->image: {q}"] = [
            {"id": h.id, "score": round(h.score, 4), "labels": list(h.payload.get("labels") or [])}
            for h in hits
        ]
    for q in sc.knowledge_queries:
        hits = searcher.search_knowledge(q, k=sc.k)
        results[f"knowledge: {q}"] = [
            {"id": h.id, "score": round(h.score, 4), "title": h.payload.get("title", "")}
            for h in hits
        ]
    for query, hits in results.items():
        print(f"{query}")
        for rank, h in enumerate(hits, 1):
            what = ", ".join(h["labels"]) or "no finding" if "labels" in h else h["title"]
            print(f"  {rank}. {h['score']:.4f}  {h['id']}  [{what}]")
    n = sum(len(v) for v in results.values())
    return {
        "queries": results,
        "seconds": round(time.perf_counter() - t, 1),
        "line": f"{len(sc.text_queries)} text->image + {len(sc.knowledge_queries)} knowledge "
        f"queries, {n} hits (top hits above and in summary.json)",
    }


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


def stage_sft_reasoner(ctx: Context) -> dict[str, Any]:
    """``jobs.train_sft`` (task reasoner): LoRA SFT of the tiny Qwen2-VL on the VQA rows."""
    sub, s = _run_sft(ctx, "sft_reasoner")
    ctx.outputs["reasoner_sft"] = s["final_checkpoint"]
    ev = s["eval"] or {}
    scores = (
        f"closed accuracy {_fmt(ev.get('closed_accuracy'))}, JSON validity "
        f"{_fmt(ev.get('json_validity'))} ({ev.get('n')} rows)"
        if ev
        else ""
    )
    return _sft_result(sub, s, scores)


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
    sub, s = _run_sft(ctx, "summariser_sft")
    ctx.outputs["summariser"] = s["final_checkpoint"]
    ev = s["eval"] or {}
    scores = (
        f"ROUGE-L {_fmt(ev.get('rougeL'))}, BLEU {_fmt(ev.get('bleu'))} ({ev.get('n')} reports)"
        if ev
        else ""
    )
    return _sft_result(sub, s, scores)


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
    acc = ", ".join(f"{label} {_fmt(h.get('accuracy'))}" for label, h in s["runs"].items())
    return {
        "report": s["report"],
        "report_json": s["report_json"],
        "plots": s["plots"],
        "rows": s["rows"],
        "runs": s["runs"],
        "seconds": s["seconds"],
        "line": f"{s['rows']} rows, accuracy {acc}; {len(s['plots'])} plots -> {s['report']}",
    }


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
    "batch_infer": Stage(
        stage_batch_infer,
        needs=(Need("data", "batch_infer.input.path"),),
        gives=("predictions",),
    ),
    "evaluate": Stage(stage_evaluate, needs=(Need("predictions"),), gives=("report",)),
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
    init_ray()
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    ctx = Context(cfg=cfg, out_dir=out_dir)
    t0 = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    for name in names:
        t = time.perf_counter()
        print(f"\n--- stage {name} ---", flush=True)
        results[name] = STAGES[name].run(ctx)
        results[name]["stage_seconds"] = round(time.perf_counter() - t, 1)
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
