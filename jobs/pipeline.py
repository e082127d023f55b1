"""MedRay end-to-end pipeline: the job the demo submits.

Stages today: (1) synthetic datasets in their real on-disk layouts (MIMIC-CXR-JPG,
VQA-RAD, MedMCQA; generated once, reused after); (2) the preprocess job
(``jobs/preprocess.py``, run in-process) turning them into unified-schema Parquet under
``<run>/data``; (3) a Ray Data pass that generates prompt/completion records across the
cluster's nodes and writes them as Parquet; (4) a Ray Train + DeepSpeed fine-tune of the
tiny text LM on them with N workers spread over nodes, with checkpoints. Prints a short
summary and writes it to ``<storage>/<run.name>/summary.json``.

    python -m jobs.pipeline --config jobs/configs/pipeline_tiny.yaml [key=value ...]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from medray.config import parse_args, to_dict
from medray.data.config import PreprocessConfig, SourceSpec
from medray.runtime import setup_logging
from medray.train.settings import RunSettings, ScalingSettings
from medray.train.sft import TextSFTSettings

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "pipeline_tiny.yaml"


@dataclass(frozen=True)
class RecordsSettings:
    """The generated records of the first stage."""

    num_records: int = 2000
    num_blocks: int = 12
    seed: int = 0


def _demo_sources() -> tuple[SourceSpec, ...]:
    return (
        SourceSpec(kind="mimic-cxr", path="$MEDRAY_HOME/synth/pipeline/mimic-cxr", synth_n=200),
        SourceSpec(kind="vqa-rad", path="$MEDRAY_HOME/synth/pipeline/vqa-rad", synth_n=80),
        SourceSpec(kind="medmcqa", path="$MEDRAY_HOME/synth/pipeline/medmcqa", synth_n=200),
    )


@dataclass(frozen=True)
class PipelineConfig:
    """End-to-end pipeline on embedded defaults (tiny models, generated data)."""

    run: RunSettings = field(default_factory=lambda: RunSettings(name="pipeline"))
    # Its output defaults to <run dir>/data; sources with synth_n are generated first.
    preprocess: PreprocessConfig = field(
        default_factory=lambda: PreprocessConfig(sources=_demo_sources(), name="pipeline")
    )
    records: RecordsSettings = field(default_factory=RecordsSettings)
    scaling: ScalingSettings = field(default_factory=ScalingSettings)
    sft: TextSFTSettings = field(default_factory=TextSFTSettings)


def _tag_node(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    import ray

    batch["node_id"] = np.full(
        len(batch["id"]), ray.get_runtime_context().get_node_id(), dtype=object
    )
    return batch


def build_dataset(cfg: PipelineConfig):
    """Ray Data: ids -> generated records (one task per block, spread over nodes)."""
    import ray

    from medray.data.text_qa import text_qa_batch

    r = cfg.records
    return (
        ray.data.range(r.num_records, override_num_blocks=r.num_blocks)
        .map_batches(text_qa_batch, fn_kwargs={"seed": r.seed}, batch_format="numpy")
        .map_batches(_tag_node, batch_format="numpy")
    )


def build_trainer(cfg: PipelineConfig, train_ds, num_rows: int):
    """Ray Train TorchTrainer running trl SFT on every worker."""
    from ray.train.torch import TorchTrainer

    from medray.train.ray_hf import run_config, scaling_config, unsplit_data_config
    from medray.train.sft import steps_for, text_sft_loop

    return TorchTrainer(
        text_sft_loop,
        train_loop_config={
            "settings": cfg.sft,
            "max_steps": steps_for(num_rows, cfg.sft.optim, cfg.scaling.num_workers),
            "use_gpu": cfg.scaling.use_gpu,
        },
        scaling_config=scaling_config(cfg.scaling),
        run_config=run_config(cfg.run),
        datasets={"train": train_ds},
        dataset_config=unsplit_data_config(),
    )


def prepare_data(cfg: PipelineConfig, out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Stages 1-2: synthetic datasets (real layouts), then the preprocess job on them."""
    from jobs import preprocess
    from medray.data.collect import prepare_synthetic, source_root

    t = time.perf_counter()
    generated = [
        s.source_name for s in cfg.preprocess.sources if prepare_synthetic(s, source_root(s))
    ]
    synth = {
        "sources": [s.source_name for s in cfg.preprocess.sources if s.synth_n],
        "generated_now": generated,
        "seconds": round(time.perf_counter() - t, 1),
    }
    pre_cfg = cfg.preprocess
    if not pre_cfg.output:
        pre_cfg = dataclasses.replace(pre_cfg, output=str(out_dir / "data"))
    return synth, preprocess.main(pre_cfg)


def main(cfg: PipelineConfig) -> dict[str, Any]:
    import ray

    from medray.models import resolve
    from medray.runtime import init_ray
    from medray.train.ray_hf import storage_path

    init_ray()
    out_dir = Path(storage_path(cfg.run)) / cfg.run.name
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    resolve(cfg.sft.model, "lm")  # builds a tiny preset once here, not in every worker at once
    synth, pre = prepare_data(cfg, out_dir)
    t_pre = time.perf_counter()

    ds = build_dataset(cfg).materialize()
    records_path = out_dir / "records"
    ds.drop_columns(["node_id"]).write_parquet(str(records_path))
    node_ids = Counter(row["node_id"] for row in ds.select_columns(["node_id"]).iter_rows())
    t_data = time.perf_counter() - t_pre

    # Materialised: training workers then read blocks without needing CPUs for Ray Data
    # tasks, which all-CPU worker groups on a small cluster would starve.
    train_ds = ds.select_columns(["prompt", "completion"]).materialize()
    result = build_trainer(cfg, train_ds, ds.count()).fit()
    metrics = result.metrics or {}
    workers = metrics.get("workers", [])
    summary = {
        "run": cfg.run.name,
        "output_dir": str(out_dir),
        "cluster_nodes": len([n for n in ray.nodes() if n["Alive"]]),
        "synth": synth,
        "preprocess": {
            "output": pre["output"],
            "counts": pre["counts"],
            "per_split": pre["per_split"],
            "per_task": pre["per_task"],
            "nodes_used": pre["nodes_used"],
            "seconds": pre["seconds"]["total"],
        },
        "records": {
            "rows": ds.count(),
            "parquet": str(records_path),
            "rows_per_node": dict(node_ids),
            "seconds": round(t_data, 1),
        },
        "train": {
            "model": cfg.sft.model,
            "num_workers": cfg.scaling.num_workers,
            "zero_stage": cfg.sft.deepspeed.zero_stage,
            "steps": metrics.get("steps"),
            "resumed_from_step": metrics.get("resumed_from_step", 0),
            "loss_first": metrics.get("loss_first"),
            "loss_last": metrics.get("loss_last"),
            "worker_nodes": [w["node_id"] for w in workers],
            "checkpoint": result.checkpoint.path if result.checkpoint else None,
        },
        "nodes_used": sorted(
            set(node_ids) | {w["node_id"] for w in workers} | set(pre["nodes_used"])
        ),
        "seconds": round(time.perf_counter() - t0, 1),
        "config": to_dict(cfg),
    }
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    _print_summary(summary)
    return summary


def _print_summary(s: dict[str, Any]) -> None:
    t = s["train"]
    c = s["preprocess"]["counts"]
    print("\n=== MedRay pipeline summary ===")
    print(
        f"data:    {c['in']} records -> {c['written']} rows, {c['quarantined']} quarantined, "
        f"{c['duplicates']} duplicates ({', '.join(f'{k} {v}' for k, v in sorted(s['preprocess']['per_split'].items()))}) "
        f"-> {s['preprocess']['output']}"
    )
    print(
        f"records: {s['records']['rows']} rows on {len(s['records']['rows_per_node'])} nodes -> {s['records']['parquet']}"
    )
    print(
        f"train:   {t['model']} x{t['num_workers']} workers (ZeRO-{t['zero_stage']}), {t['steps']} steps, "
        f"loss {t['loss_first']:.3f} -> {t['loss_last']:.3f}, on {len(set(t['worker_nodes']))} nodes"
    )
    print(f"nodes used: {len(s['nodes_used'])} of {s['cluster_nodes']}")
    print(f"checkpoint: {t['checkpoint']}")
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
