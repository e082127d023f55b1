"""Batch inference: a model over a dataset with Ray Data actors -> predictions folders.

Ray Data reads a preprocessed split (``jobs.preprocess`` output) or a JSONL folder of
images + questions, a pool of model actors (``map_batches`` with the callable class
:class:`medray.infer.predictor.VQAPredictor`, or for ``task: summariser`` / ``medqa``
:class:`medray.infer.text_predictor.TextPredictor`; concurrency, batch size, CPUs and
GPUs per actor from the config) answers every row with every configured model (base,
LoRA adapter or merged folder), and each model's answers are written as one predictions
folder in the ``medray-predictions/1`` contract (``<output>/<label>``, Parquet from the
workers, then ``manifest.json``). With ``evaluate.enabled`` the evaluation job runs on the
folders and the report's path is printed.

    python -m jobs.batch_infer --config jobs/configs/batch_infer_tiny.yaml [key=value ...]
    medray job submit -- python -m jobs.batch_infer --config jobs/configs/batch_infer_tiny.yaml
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from medray.config import ConfigError, parse_args, to_dict
from medray.data import io
from medray.eval.predictions import MANIFEST, expand_location, write_manifest
from medray.infer.pool import configure_pool, tasks_in_flight
from medray.infer.summary import print_summary, summarize
from medray.infer.text_predictor import INPUT_COLUMNS as TEXT_INPUT
from medray.paths import runs_dir
from medray.runtime import init_ray, setup_logging
from medray.train.sft_tasks import MODEL_KIND, ROW_TASK

log = logging.getLogger(__name__)
MARKER = ".medray-batch-infer"
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "batch_infer_tiny.yaml"


@dataclass(frozen=True)
class InputSettings:
    """What to answer: a preprocessed split, or JSONL lines of images + questions."""

    kind: Literal["preprocessed", "jsonl"] = "preprocessed"
    path: str = (
        "$MEDRAY_HOME/data/synthetic"  # output folder of jobs.preprocess, or .jsonl file/folder
    )
    split: str = "test"  # the split read (preprocessed) or recorded (jsonl)
    tasks: tuple[str, ...] = ()  # preprocessed rows of these tasks; empty: the model task's
    limit: int = 0  # first N rows by sample_id (0: all)
    image_root: str = ""  # jsonl: image paths are relative to this (default: the file's folder)
    source: str = "jsonl"  # jsonl: the rows' source name
    validate: bool = True  # check preprocessed batches against the schema while reading


@dataclass(frozen=True)
class ModelSettings:
    """One model of the run; its predictions go to ``<output>/<label>``."""

    label: str = "base"
    model: str = "tiny-qwen2-vl"  # preset, hub id, or folder (a merged model)
    adapter: str = ""  # peft LoRA adapter folder on top of ``model``
    # The reasoner's output format (medray.contracts.reasoner.OUTPUT_FORMATS) it is
    # prompted and parsed in; empty: the one its SFT job recorded, else the full format.
    output_format: str = ""


@dataclass(frozen=True)
class ActorSettings:
    """The model actor pool (Ray Data ``map_batches`` with a callable class)."""

    concurrency: int = 2  # actors
    batch_size: int = 8  # rows per batch (one padded generate call per model)
    num_cpus: float = 1.0  # per actor; torch threads = int(num_cpus)
    num_gpus: float = 0.0  # per actor; > 0 runs on cuda
    # Rows are handed out only once every actor has loaded its models (otherwise the first
    # actor up takes a small split alone); an error if the pool is not up in this time.
    start_timeout_s: int = 900
    # Batches queued per actor. Ray Data hands an actor its next batch only after it has
    # noticed the previous one finish (~0.1-0.2 s here); a second batch in flight hides that
    # gap, which otherwise costs a 2-actor pool half its throughput on short batches
    # (benchmarks/batch_infer.py). Used once every actor has at least 4 batches to do;
    # on a smaller split one batch at a time, so that every actor gets some.
    max_tasks_in_flight: int = 2


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy decoding of the structured JSON answer."""

    max_new_tokens: int = 0  # 0: the reasoner contract's length (what the served reasoner uses)
    # The reasoner contract's prompt (medray.contracts.reasoner), as every path uses.
    prompt: Literal["serving"] = "serving"


@dataclass(frozen=True)
class CounterfactualSettings:
    """Inputs of the faithfulness figures of jobs.evaluate (flip rates, blank control)."""

    enabled: bool = False  # also answer with the ROI / a random same-size region inpainted
    # Where the ROI comes from (medray.contracts.counterfactual.SOURCES).
    roi: Literal["reference", "predicted", "both", "predicted_first"] = "both"
    blank_control: bool = False  # also answer with a blank image (text prior)
    seed: int = 0  # of the random regions


@dataclass(frozen=True)
class EvaluateStage:
    """Run jobs.evaluate on the predictions folders afterwards."""

    enabled: bool = False
    name: str = ""  # report folder name; empty: <output>/report
    aggregate: bool = True  # add the confidence-weighted vote when there are 2+ models


@dataclass(frozen=True)
class BatchInferConfig:
    """Batch inference of the reasoner over a split with Ray Data actors."""

    name: str = "batch-infer"
    # Which contract the models follow: the reasoner (vqa rows, images), the summariser
    # (report rows) or the medical-QA model (mcq rows); text tasks need preprocessed input.
    task: Literal["reasoner", "summariser", "medqa"] = "reasoner"
    output: str = ""  # empty: $MEDRAY_HOME/runs/<name>; a folder or s3://...
    overwrite: bool = True  # replace earlier predictions folders of the same labels
    input: InputSettings = field(default_factory=InputSettings)
    models: tuple[ModelSettings, ...] = (ModelSettings(),)
    actors: ActorSettings = field(default_factory=ActorSettings)
    generation: GenerationSettings = field(default_factory=GenerationSettings)
    counterfactual: CounterfactualSettings = field(default_factory=CounterfactualSettings)
    # Reasoner: each answer's caption-question consistency with this sentence embedder
    # (the GRPO consistency reward's; a second risk-coverage curve in the report); "": off.
    caption_embedder: str = "minilm-l6"
    evaluate: EvaluateStage = field(default_factory=EvaluateStage)

    def __post_init__(self) -> None:
        labels = [m.label for m in self.models]
        if not labels:
            raise ConfigError("models: name at least one model")
        if len(set(labels)) != len(labels):
            raise ConfigError(f"models: labels must be unique, got {labels}")
        for lb in labels:
            if not lb or "/" in lb or lb.startswith(".") or lb == "report":
                raise ConfigError(
                    f"models: label {lb!r} must be a plain folder name (not 'report')"
                )
        row_task = ROW_TASK[self.task]
        if self.input.tasks not in ((), (row_task,)) and self.task != "reasoner":
            raise ConfigError(
                f"input.tasks: the {self.task} answers {row_task!r} rows only, got "
                f"{list(self.input.tasks)} (leave it empty)"
            )
        if self.task != "reasoner" and self.input.kind != "preprocessed":
            raise ConfigError(f"input.kind: the {self.task} reads preprocessed rows, not jsonl")
        a = self.actors
        if a.concurrency < 1 or a.batch_size < 1 or a.max_tasks_in_flight < 1:
            raise ConfigError(
                "actors.concurrency, actors.batch_size and actors.max_tasks_in_flight "
                "must be at least 1"
            )
        if self.actors.num_cpus <= 0 and self.actors.num_gpus <= 0:
            raise ConfigError("actors: num_cpus or num_gpus must be positive")
        if self.generation.max_new_tokens < 0:
            raise ConfigError(
                "generation.max_new_tokens must be at least 1 (or 0: the reasoner contract's length)"
            )


def output_dir(cfg: BatchInferConfig) -> str:
    return expand_location(cfg.output) if cfg.output else str(runs_dir() / cfg.name)


def build_inputs(cfg: BatchInferConfig):
    """The input rows as a Ray Dataset with their fingerprint (:class:`InputRows`)."""
    from medray.infer.inputs import jsonl_rows, preprocessed_rows

    i = cfg.input
    location = expand_location(i.path)
    if i.kind == "jsonl":
        return jsonl_rows(location, i.split, i.source, i.image_root, i.limit)
    tasks = i.tasks or (ROW_TASK[cfg.task],)
    if cfg.task == "reasoner":
        return preprocessed_rows(location, i.split, tasks, i.limit, i.validate)
    return preprocessed_rows(location, i.split, tasks, i.limit, i.validate, TEXT_INPUT)


def resolve_models(cfg: BatchInferConfig) -> list[dict[str, Any]]:
    """Model references as every node loads them: tiny presets built here once (absolute
    folders), adapter folders absolute and checked."""
    from medray.models import resolve

    out = []
    for m in cfg.models:
        adapter = ""
        if m.adapter:
            adapter = expand_location(m.adapter)
            if "://" not in adapter and not (Path(adapter) / "adapter_config.json").is_file():
                raise ConfigError(
                    f"models[{m.label}].adapter: {adapter} is not a peft adapter folder "
                    "(no adapter_config.json)"
                )
        model = expand_location(m.model) if Path(expand_location(m.model)).exists() else m.model
        resolved = resolve(model, MODEL_KIND[cfg.task])  # type: ignore[arg-type]
        entry = {"label": m.label, "model": resolved, "adapter": adapter}
        if cfg.task == "reasoner":
            entry["output_format"] = output_format(m, adapter or model)
        out.append(entry)
    return out


def output_format(m: ModelSettings, ref: str) -> str:
    """The reasoner output format of model ``m`` (``ref``: its adapter or model): the
    configured one, else the one its training job recorded, else the full format."""
    from medray.contracts.reasoner import DEFAULT_FORMAT, OUTPUT_FORMATS
    from medray.models.finetuned import describe

    if m.output_format:
        if m.output_format not in OUTPUT_FORMATS:
            raise ConfigError(
                f"models[{m.label}].output_format {m.output_format!r}: one of "
                f"{sorted(OUTPUT_FORMATS)}"
            )
        return m.output_format
    if "://" in ref or not Path(ref).is_dir():
        return DEFAULT_FORMAT  # a preset or hub id: no training record
    return describe(ref, "vlm").output_format or DEFAULT_FORMAT


def _prepare(folder: str, overwrite: bool) -> None:
    """Make ``folder`` ready for a new predictions folder; never touch a foreign folder."""
    if not io.exists(folder):
        return
    if not io.list_files(folder):
        io.delete_dir(folder)
        return
    if not io.is_file(io.join(folder, MANIFEST)) and not io.is_file(io.join(folder, MARKER)):
        raise FileExistsError(
            f"{folder} exists and is not a predictions folder: it is left alone; "
            "pick another output or model label"
        )
    if not overwrite:
        raise FileExistsError(f"{folder} holds predictions; set overwrite=true to replace them")
    io.delete_dir(folder)


def predict(cfg: BatchInferConfig, inputs, models: list[dict[str, Any]]):
    """The materialized Ray Dataset of prediction rows (every model, every row)."""
    import ray

    from medray.infer.predictor import VQAPredictor
    from medray.infer.text_predictor import TextPredictor

    a, c = cfg.actors, cfg.counterfactual
    device = "cuda" if a.num_gpus > 0 else "cpu"
    if cfg.task == "reasoner":
        fn, kwargs = (
            VQAPredictor,
            {
                "models": models,
                "max_new_tokens": cfg.generation.max_new_tokens,
                "num_cpus": a.num_cpus,
                "device": device,
                "counterfactual": c.enabled,
                "roi_source": c.roi,
                "blank_control": c.blank_control,
                "seed": c.seed,
                "prompt": cfg.generation.prompt,
                "caption_embedder": cfg.caption_embedder,
            },
        )
    else:
        if c.enabled or c.blank_control:
            log.info("counterfactual / blank controls are image controls: not run for %s", cfg.task)
        fn, kwargs = (
            TextPredictor,
            {
                "models": models,
                "task": cfg.task,
                "max_new_tokens": cfg.generation.max_new_tokens,
                "num_cpus": a.num_cpus,
                "device": device,
            },
        )
    # One block per batch: a split stored in a few large files would otherwise reach only
    # as many actors as it has files. Materialized before the actors start: otherwise the
    # actors can hold every CPU the read tasks need (a node's last half CPU cannot run a
    # 1-CPU read task) and the job waits forever; Ray spills the rows to disk when large.
    ds = inputs.dataset.repartition(target_num_rows_per_block=a.batch_size).materialize()
    configure_pool(ds, a)
    return ds.map_batches(
        fn,
        fn_constructor_kwargs=kwargs,
        batch_size=a.batch_size,
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(
            size=a.concurrency,
            max_tasks_in_flight_per_actor=tasks_in_flight(a, ds.num_blocks()),
        ),
        num_cpus=a.num_cpus,
        num_gpus=a.num_gpus,
        scheduling_strategy="SPREAD",  # actors on as many nodes as possible
    ).materialize()


def write_folders(cfg, preds, inputs, models, out: str) -> dict[str, str]:
    """One predictions folder per model: Parquet from the workers, then the manifest."""
    folders = {}
    for m in models:
        label = m["label"]
        folder = io.join(out, label)
        _prepare(folder, cfg.overwrite)
        # Marks the folder as ours until the manifest lands, so a rerun after a crash may
        # replace it; readers ignore it (they need the manifest).
        io.write_bytes(io.join(folder, MARKER), b"")
        preds.filter(lambda r, lb=label: r["model_label"] == lb).drop_columns(
            ["model_label", "actor"]
        ).write_parquet(folder)
        write_manifest(
            folder,
            model=m["model"],
            model_label=label,
            dataset=inputs.location,
            split=inputs.split,
            dataset_fingerprint=inputs.fingerprint,
            adapter=m["adapter"] or None,
            config=to_dict(cfg),
        )
        folders[label] = folder
    return folders


def run(cfg: BatchInferConfig) -> dict[str, Any]:
    """Run batch inference (and the evaluation stage); return the summary."""
    init_ray()
    t0 = time.perf_counter()
    models = resolve_models(cfg)
    inputs = build_inputs(cfg)
    out = output_dir(cfg)
    t1 = time.perf_counter()
    preds = predict(cfg, inputs, models)
    infer_s = time.perf_counter() - t1
    folders = write_folders(cfg, preds, inputs, models, out)
    summary = {
        "output_dir": out,
        "task": cfg.task,
        "dataset": inputs.location,
        "split": inputs.split,
        "fingerprint": inputs.fingerprint,
        "predictions": folders,
        **summarize(preds, inputs.n_rows, infer_s),
        "total_seconds": round(time.perf_counter() - t0, 2),
    }
    if cfg.evaluate.enabled:
        summary["evaluation"] = evaluate_stage(cfg, folders, inputs, out)
        summary["report"] = summary["evaluation"]["report"]
    io.write_bytes(io.join(out, "summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def evaluate_stage(cfg: BatchInferConfig, folders: dict[str, str], inputs, out: str) -> dict:
    """jobs.evaluate on this run's folders, checked against this run's input rows."""
    from jobs.evaluate import config_for
    from jobs.evaluate import main as evaluate_main

    e = cfg.evaluate
    ecfg = config_for(
        folders,
        dataset=inputs.location,
        split=inputs.split,
        fingerprint=inputs.fingerprint,
        name=e.name or f"{cfg.name}-report",
        output="" if e.name else io.join(out, "report"),
        aggregate=e.aggregate and len(folders) > 1,
    )
    return evaluate_main(ecfg)


def main(cfg: BatchInferConfig) -> dict[str, Any]:
    summary = run(cfg)
    print_summary(summary)
    return summary


if __name__ == "__main__":
    setup_logging()
    main(
        parse_args(
            BatchInferConfig,
            sys.argv[1:],
            prog="python -m jobs.batch_infer",
            default_config=DEFAULT_CONFIG,
        )
    )
