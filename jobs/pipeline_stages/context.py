"""What pipeline stages share: the stage record, its needs and the run context.

A stage is a function ``(ctx) -> dict`` (its summary, with a one-line ``line``); it takes
what earlier stages produced from ``ctx.outputs`` and puts its own products there. The
registry of stages (``STAGES``) and the plan check live in ``jobs/pipeline.py``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medray.config import ConfigError
from medray.train.settings import RunSettings

if TYPE_CHECKING:
    from jobs.pipeline import PipelineConfig


def config_value(cfg: Any, path: str) -> Any:
    """The value of a dotted config field, e.g. ``grpo.grpo.init``."""
    return functools.reduce(getattr, path.split("."), cfg)


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
    fingerprint), ``text_predictions`` (the same per text task: ``summariser``, ``medqa``),
    ``report`` / ``text_reports`` (the evaluation reports, ``report.md``).
    """

    cfg: PipelineConfig
    out_dir: Path
    outputs: dict[str, Any] = field(default_factory=dict)

    def need(self, stage: str, key: str) -> Any:
        """Input ``key`` of ``stage``: its config field when set, else the earlier stage's
        output (``check_plan`` has made sure one of them is there)."""
        from jobs.pipeline import STAGES

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
