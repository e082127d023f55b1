"""Glue between Ray Train, Ray Data and Hugging Face / trl trainers.

Data: each worker streams the train split from Ray Data into a local, memory-mapped
Arrow/Parquet file and opens it as a ``datasets.Dataset``. The split is *not*
pre-sharded by Ray (``DataConfig(datasets_to_split=[])``): the HF/accelerate dataloader
shards by rank itself, and sharding twice would silently drop data.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from medray.models.finetuned import FINAL_MARKER  # one home: the loader reads it
from medray.paths import runs_dir
from medray.train.settings import DeepSpeedSettings, RunSettings, ScalingSettings

log = logging.getLogger(__name__)


def skip_deepspeed_shm_build() -> None:
    """Stop DeepSpeed from JIT-compiling its shared-memory comm op in this process.

    On CPU, ``deepspeed.comm``'s torch backend compiles ``deepspeed_shm_comm`` (a C++
    extension, minutes of ``cc1plus`` and >1 GB of RAM per compile on a fresh machine)
    on every ``init_distributed``; the op is only used by ``inference_all_reduce``, never by
    training, whose collectives go through the process group (gloo / NCCL). Marking it
    incompatible makes DeepSpeed skip the build. Call it in each training worker before
    DeepSpeed initialises.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False


def deepspeed_config(
    ds: DeepSpeedSettings,
    *,
    micro_batch: int | None = None,
    grad_accum: int = 1,
    world_size: int = 1,
    grad_clip: float = 1.0,
    bf16: bool = False,
) -> dict[str, Any] | None:
    """A DeepSpeed config dict.

    Without ``micro_batch`` the batch, clipping and precision fields are ``"auto"`` (the
    HF Trainer fills them in); with it, they are explicit, for hand-written loops that
    call ``deepspeed.initialize`` themselves.
    """
    if not ds.enabled:
        return None
    zero: dict[str, Any] = {
        "stage": ds.zero_stage,
        "overlap_comm": False,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto" if micro_batch is None else 5e7,
    }
    if ds.zero_stage == 3:
        zero.update(
            stage3_prefetch_bucket_size="auto" if micro_batch is None else 5e7,
            stage3_param_persistence_threshold="auto" if micro_batch is None else 1e5,
            stage3_gather_16bit_weights_on_model_save=True,
        )
    if ds.offload_optimizer and ds.zero_stage >= 1:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    config: dict[str, Any] = {
        "zero_optimization": zero,
        # Trainers pass a torch optimizer; DeepSpeed's fused Adam needs CUDA.
        "zero_allow_untested_optimizer": True,
    }
    if micro_batch is None:
        config.update(
            train_micro_batch_size_per_gpu="auto",
            train_batch_size="auto",
            gradient_accumulation_steps="auto",
            gradient_clipping="auto",
            bf16={"enabled": "auto"},
            fp16={"enabled": "auto"},
        )
    else:
        config.update(
            train_micro_batch_size_per_gpu=micro_batch,
            gradient_accumulation_steps=grad_accum,
            train_batch_size=micro_batch * grad_accum * world_size,
            gradient_clipping=grad_clip,
            bf16={"enabled": bf16},
            steps_per_print=10**9,
        )
    return config


def scaling_config(s: ScalingSettings):
    """Ray Train ``ScalingConfig`` from settings."""
    from ray.train import ScalingConfig

    return ScalingConfig(
        num_workers=s.num_workers,
        use_gpu=s.use_gpu,
        resources_per_worker={"CPU": s.cpus_per_worker, **({"GPU": 1} if s.use_gpu else {})},
        placement_strategy=s.placement_strategy,
    )


def storage_path(run: RunSettings) -> str:
    """Absolute storage root for Ray Train (a URI is passed through)."""
    if run.storage_path and "://" in run.storage_path:
        return run.storage_path
    return (
        str(Path(run.storage_path).expanduser().resolve()) if run.storage_path else str(runs_dir())
    )


def run_config(run: RunSettings, metric: str | None = None, mode: str = "max"):
    """Ray Train ``RunConfig``: named storage (re-running the same name resumes), failures, checkpoints.

    Without ``metric`` the most recent checkpoints are kept (what resuming needs); with it,
    the best ones by that reported metric.
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig

    return RunConfig(
        name=run.name,
        storage_path=storage_path(run),
        failure_config=FailureConfig(max_failures=run.max_failures),
        checkpoint_config=CheckpointConfig(
            num_to_keep=run.num_checkpoints_to_keep,
            checkpoint_score_attribute=metric,
            checkpoint_score_order=mode,
        ),
    )


def materialize_in_order(ds):
    """``ds.materialize()`` with the rows stored in the input's order.

    For a training split materialised on the driver: without it the blocks are stored in
    the order their tasks finish, so two runs of one config on one input trained on the
    rows in different orders (``train_order`` differed from run to run, though the ranks of
    each run agreed). The setting is made on the dataset's own context (a Dataset keeps the
    context it was created with) and put back afterwards."""
    options = ds.context.execution_options
    before = options.preserve_order
    options.preserve_order = True
    try:
        return ds.materialize()
    finally:
        options.preserve_order = before


def unsplit_data_config():
    """Every worker sees the whole split, in the same order; HF's dataloader shards it by rank.

    The order matters: accelerate gives rank r the rows at positions r, r + world, ... of one
    seeded shuffle, so every rank must hold the rows in the same order. Each worker runs its
    own copy of the dataset's pipeline, and Ray Data hands out blocks as their tasks finish
    unless ``preserve_order`` is set: without it the ranks' orders differed with the load,
    and the ranks trained on overlapping subsets that changed from run to run."""
    from ray.train import DataConfig

    options = DataConfig.default_ingest_options()
    options.preserve_order = True
    return DataConfig(datasets_to_split=[], execution_options=options)


def row_order(ds, column: str) -> str:
    """A digest of ``ds[column]`` in row order: equal on every rank when the ranks hold the
    same rows in the same order (:func:`unsplit_data_config`)."""
    import hashlib

    h = hashlib.sha256()
    for batch in ds.select_columns([column]).iter(batch_size=4096):  # bounded memory
        for value in batch[column]:
            h.update(repr(value).encode())
            h.update(b"\0")
    return h.hexdigest()[:16]


def dataset_from_ray(
    name: str, workdir: str | Path | None = None, columns: list[str] | None = None
):
    """Stream Ray dataset ``name`` of this worker into a memory-mapped ``datasets.Dataset``."""
    import pyarrow.parquet as pq
    import ray.train

    import datasets

    it = ray.train.get_dataset_shard(name)
    if it is None:
        raise ValueError(f"the trainer was given no dataset named {name!r}")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{name}-rank{ray.train.get_context().get_world_rank()}.parquet"
    writer = None
    rows = 0
    try:
        for batch in it.iter_batches(batch_format="pyarrow", batch_size=1024):
            if columns:
                batch = batch.select(columns)
            if writer is None:
                writer = pq.ParquetWriter(str(path), batch.schema)
            writer.write_table(batch)
            rows += batch.num_rows
    finally:
        if writer is not None:
            writer.close()
    if rows == 0:
        raise ValueError(f"dataset {name!r} is empty on this worker")
    return datasets.Dataset.from_parquet(str(path), cache_dir=str(workdir / "hf-cache"))


def latest_checkpoint(workdir: str | Path) -> tuple[str, str] | None:
    """Ray Train's latest checkpoint, copied under ``workdir``: ``("hf", dir)`` for a
    mid-training HF checkpoint to resume from, ``("final", dir)`` for a finished run's
    final model, or None."""
    import ray.train
    from ray.train.huggingface.transformers import RayTrainReportCallback

    ckpt = ray.train.get_checkpoint()
    if ckpt is None:
        return None
    local = Path(ckpt.to_directory(str(Path(workdir) / "resume")))
    if (local / FINAL_MARKER).is_file():
        return "final", str(local)
    path = local / RayTrainReportCallback.CHECKPOINT_NAME
    if not path.is_dir():
        raise FileNotFoundError(
            f"checkpoint {ckpt.path} has neither {FINAL_MARKER} nor a {path.name}/ folder"
        )
    log.info("resuming from %s", ckpt.path)
    return "hf", str(path)


def report_final(
    trainer: Any, metrics: dict[str, Any], workdir: str | Path, save_extra=None
) -> None:
    """Save the final model (all ranks: DeepSpeed gathers shards) and report it from rank 0
    as Ray Train's last checkpoint, with ``metrics`` (which must be JSON-serialisable)."""
    import json

    import ray.train
    from ray.train import Checkpoint

    final = Path(workdir) / "final"
    trainer.save_model(str(final))
    rank = ray.train.get_context().get_world_rank()
    checkpoint = None
    if rank == 0:
        if save_extra is not None:
            save_extra(final)
        (final / FINAL_MARKER).write_text(json.dumps(metrics, indent=2))
        checkpoint = Checkpoint.from_directory(str(final))
    ray.train.report(metrics, checkpoint=checkpoint)


def report_again(final_dir: str) -> None:
    """Re-report a finished run's final checkpoint (a restart after the last report)."""
    import json

    import ray.train
    from ray.train import Checkpoint

    metrics = json.loads((Path(final_dir) / FINAL_MARKER).read_text())
    rank = ray.train.get_context().get_world_rank()
    ray.train.report(
        metrics, checkpoint=Checkpoint.from_directory(final_dir) if rank == 0 else None
    )


class InjectedFailure(RuntimeError):
    """Raised by ``fault_callback`` to simulate a worker crash."""


def fault_callback(fail_at_step: int):
    """A transformers callback that raises at ``fail_at_step`` on rank 0 of a first attempt."""
    import ray.train
    from transformers import TrainerCallback

    first_attempt = ray.train.get_checkpoint() is None
    rank = ray.train.get_context().get_world_rank()

    class _Fault(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if fail_at_step and first_attempt and rank == 0 and state.global_step == fail_at_step:
                raise InjectedFailure(
                    f"injected failure at step {fail_at_step} (fault.fail_at_step)"
                )

    return _Fault()


def gather_workers(**extra: Any) -> list[dict[str, Any]]:
    """Every worker's placement (rank, node id, pid) and ``extra``, gathered on all ranks."""
    import torch.distributed as dist

    me = {**worker_node(), **extra}
    if not dist.is_initialized():
        return [me]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, me)
    return out


def worker_node() -> dict[str, Any]:
    """Where this worker runs: rank, node id, pid."""
    import ray
    import ray.train

    ctx = ray.train.get_context()
    node_id = ray.get_runtime_context().get_node_id()
    return {"rank": ctx.get_world_rank(), "node_id": node_id, "pid": os.getpid()}
