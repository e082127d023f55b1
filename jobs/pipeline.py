"""MedRay end-to-end pipeline: the job the demo submits.

The pipeline is an ordered list of named stages (``STAGES``). Each stage is a small
function ``(ctx) -> dict`` that calls the importable entry point of one job with its
sub-config from the pipeline YAML (``preprocess:``, ``train_clip:``, ...), takes what
earlier stages produced from ``ctx.outputs`` (data folder, CLIP checkpoint, Milvus
settings, ...) and puts its own products there. ``stages: [...]`` in the config (or
``stages=[preprocess,train_clip]`` on the command line) selects a subset; they always
run in registry order. Every sub-job writes under ``<run dir>/<stage>``.

Adding a stage is a local edit: one ``stage_*`` function, one entry in ``STAGES`` and one
config section (a field of ``PipelineConfig`` + a section in ``pipeline_tiny.yaml``).

Prints one line per stage and writes the summary to ``<storage>/<run.name>/summary.json``.

    python -m jobs.pipeline --config jobs/configs/pipeline_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from jobs.index import IndexConfig
from jobs.train_clip import TrainClipConfig
from medray.config import ConfigError, parse_args, to_dict
from medray.data.config import PreprocessConfig, SourceSpec
from medray.runtime import setup_logging
from medray.train.settings import RunSettings, ScalingSettings
from medray.train.sft import TextSFTSettings

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "pipeline_tiny.yaml"


# ---------------------------------------------------------------------------- config


@dataclass(frozen=True)
class RecordsSettings:
    """The generated prompt/completion records of the text SFT stage."""

    num_records: int = 2000
    num_blocks: int = 12
    seed: int = 0


@dataclass(frozen=True)
class TextSFTStageConfig:
    """Placeholder LM stage: generated records -> Ray Train + DeepSpeed trl SFT of the text LM."""

    records: RecordsSettings = field(default_factory=RecordsSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    sft: TextSFTSettings = field(default_factory=TextSFTSettings)


@dataclass(frozen=True)
class SearchStageConfig:
    """Queries run against the indexed collections; the top hits are printed (ids, scores,
    labels or titles only)."""

    k: int = 3
    text_queries: tuple[str, ...] = ("pleural effusion", "enlarged cardiac silhouette")
    knowledge_queries: tuple[str, ...] = ("how is a tension pneumothorax treated",)


def _demo_sources() -> tuple[SourceSpec, ...]:
    return (
        SourceSpec(kind="mimic-cxr", path="$MEDRAY_HOME/synth/pipeline/mimic-cxr", synth_n=200),
        SourceSpec(kind="vqa-rad", path="$MEDRAY_HOME/synth/pipeline/vqa-rad", synth_n=80),
        SourceSpec(kind="medmcqa", path="$MEDRAY_HOME/synth/pipeline/medmcqa", synth_n=200),
    )


@dataclass(frozen=True)
class PipelineConfig:
    """End-to-end pipeline on embedded defaults (tiny models, generated data).

    One section per stage; a stage's section is the config of the job it runs.
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
    text_sft: TextSFTStageConfig = field(default_factory=TextSFTStageConfig)

    def __post_init__(self) -> None:
        unknown = [s for s in self.stages if s not in STAGES]
        if unknown:
            raise ConfigError(
                f"unknown stage {unknown[0]!r} in `stages`; valid stages: {', '.join(STAGES)}"
            )


# --------------------------------------------------------------------------- context


@dataclass
class Context:
    """What stages share: the config, the run folder, and what earlier stages produced.

    ``outputs`` keys in use: ``data`` (preprocessed Parquet folder), ``clip_model``
    (fine-tuned open_clip folder), ``milvus`` (``MilvusSettings`` of the indexed
    collections), ``text_lm`` (text LM checkpoint).
    """

    cfg: PipelineConfig
    out_dir: Path
    outputs: dict[str, Any] = field(default_factory=dict)

    def require(self, key: str, stage: str, hint: str) -> Any:
        """An earlier stage's output, or a clear error naming what to do."""
        if key not in self.outputs:
            raise ConfigError(
                f"stage {stage!r} needs {key!r} from an earlier stage: add that stage to "
                f"`stages` or {hint}"
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

    sub = ctx.cfg.train_clip
    data_in = sub.data.input or ctx.require("data", "train_clip", "set train_clip.data.input")
    sub = dataclasses.replace(
        sub,
        run=ctx.sub_run(sub.run, "train_clip"),
        data=dataclasses.replace(sub.data, input=data_in),
    )
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
        data_in = cases.input or ctx.require("data", "index", "set index.cases.input")
        cases = dataclasses.replace(
            cases, input=data_in, clip_model=ctx.outputs.get("clip_model", cases.clip_model)
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


def _tag_node(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import ray

    batch["node_id"] = np.full(
        len(batch["id"]), ray.get_runtime_context().get_node_id(), dtype=object
    )
    return batch


def build_records(r: RecordsSettings):
    """Ray Data: ids -> generated records (one task per block, spread over nodes)."""
    import ray

    from medray.data.text_qa import text_qa_batch

    return (
        ray.data.range(r.num_records, override_num_blocks=r.num_blocks)
        .map_batches(text_qa_batch, fn_kwargs={"seed": r.seed}, batch_format="numpy")
        .map_batches(_tag_node, batch_format="numpy")
    )


def build_sft_trainer(sc: TextSFTStageConfig, run: RunSettings, train_ds, num_rows: int):
    """Ray Train TorchTrainer running trl SFT on every worker."""
    from ray.train.torch import TorchTrainer

    from medray.train.ray_hf import run_config, scaling_config, unsplit_data_config
    from medray.train.sft import steps_for, text_sft_loop

    return TorchTrainer(
        text_sft_loop,
        train_loop_config={
            "settings": sc.sft,
            "max_steps": steps_for(num_rows, sc.sft.optim, sc.scaling.num_workers),
            "use_gpu": sc.scaling.use_gpu,
        },
        scaling_config=scaling_config(sc.scaling),
        run_config=run_config(run),
        datasets={"train": train_ds},
        dataset_config=unsplit_data_config(),
    )


def stage_text_sft(ctx: Context) -> dict[str, Any]:
    """Placeholder LM stage: records generated on every node -> trl SFT of the tiny text LM."""
    from medray.models import resolve

    sc = ctx.cfg.text_sft
    resolve(sc.sft.model, "lm")  # builds a tiny preset once here, not in every worker at once
    stage_dir = ctx.out_dir / "text_sft"
    t = time.perf_counter()
    ds = build_records(sc.records).materialize()
    records_path = stage_dir / "records"
    ds.drop_columns(["node_id"]).write_parquet(str(records_path))
    node_ids = Counter(row["node_id"] for row in ds.select_columns(["node_id"]).iter_rows())
    rows = ds.count()
    # Materialised: training workers then read blocks without needing CPUs for Ray Data
    # tasks, which all-CPU worker groups on a small cluster would starve.
    train_ds = ds.select_columns(["prompt", "completion"]).materialize()
    run = ctx.sub_run(RunSettings(name="text_sft"), "text_sft")
    result = build_sft_trainer(sc, run, train_ds, rows).fit()
    metrics = result.metrics or {}
    workers = [w["node_id"] for w in metrics.get("workers", [])]
    checkpoint = result.checkpoint.path if result.checkpoint else None
    ctx.outputs["text_lm"] = checkpoint
    return {
        "records": {"rows": rows, "parquet": str(records_path), "rows_per_node": dict(node_ids)},
        "model": sc.sft.model,
        "num_workers": sc.scaling.num_workers,
        "zero_stage": sc.sft.deepspeed.zero_stage,
        "steps": metrics.get("steps"),
        "resumed_from_step": metrics.get("resumed_from_step", 0),
        "loss_first": metrics.get("loss_first"),
        "loss_last": metrics.get("loss_last"),
        "worker_nodes": workers,
        "nodes_used": sorted(set(node_ids) | set(workers)),
        "checkpoint": checkpoint,
        "seconds": round(time.perf_counter() - t, 1),
        "line": f"{rows} records on {len(node_ids)} nodes; {sc.sft.model} x{sc.scaling.num_workers} "
        f"workers (ZeRO-{sc.sft.deepspeed.zero_stage}), {metrics.get('steps')} steps, loss "
        f"{metrics.get('loss_first', float('nan')):.3f} -> {metrics.get('loss_last', float('nan')):.3f}",
    }


# The pipeline, in order. Add a stage here (and a section in PipelineConfig + the YAML).
STAGES: dict[str, Callable[[Context], dict[str, Any]]] = {
    "preprocess": stage_preprocess,
    "train_clip": stage_train_clip,
    "index": stage_index,
    "search": stage_search,
    "text_sft": stage_text_sft,
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
        results[name] = STAGES[name](ctx)
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
