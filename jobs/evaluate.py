"""Evaluate prediction runs and write a report a person can read.

Reads one or more predictions folders (written by batch inference, format
``medray-predictions/1``, see ``medray/eval/predictions.py``), refuses any that was made
for another dataset, split, model or set of input rows, optionally adds the
confidence-weighted majority vote of the runs, computes every metric of
``medray/eval`` per run and writes ``report.md``, ``report.json``, the PNG plots,
``rows.parquet`` (every row's score and failure kinds) and ``summary.json`` into the
output folder.

    python -m jobs.evaluate --config jobs/configs/evaluate_tiny.yaml [key=value ...]

No Ray cluster is needed: prediction files are read with pyarrow on the driver (a
million rows of predictions are a few hundred MB without images).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from medray.config import ConfigError, parse_args, to_dict
from medray.eval import uncertainty
from medray.eval.aggregate import aggregate
from medray.eval.metrics import EvalSettings, headline, run_metrics
from medray.eval.predictions import (
    PredictionManifest,
    PredictionMismatchError,
    Predictions,
    check_expected,
    expand_location,
    read_predictions,
    write_predictions,
)
from medray.eval.report import REPORT_FORMAT, write_report
from medray.eval.report_sections import fmt
from medray.paths import runs_dir
from medray.runtime import setup_logging

log = logging.getLogger(__name__)
DEFAULT_CONFIG = Path(__file__).parent / "configs" / "evaluate_tiny.yaml"


@dataclass(frozen=True)
class ExpectedSettings:
    """What the predictions must have been made for (refused otherwise)."""

    dataset: str = ""  # the preprocessed input batch inference read (required)
    split: str = "test"  # required
    models: tuple[str, ...] = ()  # per predictions folder: its model, adapter or label; () = any
    fingerprint: str = ""  # the exact input rows; empty: the runs only have to agree


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluate batch-inference predictions and write the report."""

    predictions: tuple[str, ...] = ()  # predictions folders, one per model / run
    expected: ExpectedSettings = field(default_factory=ExpectedSettings)
    name: str = "evaluate"
    output: str = ""  # empty: $MEDRAY_HOME/runs/<name>
    aggregate: bool = False  # add the confidence-weighted majority vote of the runs
    metrics: EvalSettings = field(default_factory=EvalSettings)

    def __post_init__(self) -> None:
        if not self.predictions:
            raise ConfigError("predictions: name at least one predictions folder")
        if not self.expected.dataset or not self.expected.split:
            raise ConfigError(
                "expected.dataset and expected.split must be set: the evaluation refuses "
                "predictions made for other data"
            )
        if self.expected.models and len(self.expected.models) != len(self.predictions):
            raise ConfigError(
                f"expected.models names {len(self.expected.models)} models for "
                f"{len(self.predictions)} predictions folders; give one per folder or none"
            )
        if self.aggregate and len(self.predictions) < 2:
            raise ConfigError("aggregate: true needs at least two predictions folders")


def config_for(
    folders: Mapping[str, str],
    *,
    dataset: str,
    split: str,
    fingerprint: str,
    output: str,
    aggregate: bool,
    metrics: EvalSettings | None = None,
    name: str = "evaluate",
) -> EvaluateConfig:
    """The config that evaluates one batch-inference run's predictions folders
    (``label -> folder``), each checked against that run's dataset, split, model label and
    input rows."""
    return EvaluateConfig(
        predictions=tuple(folders.values()),
        expected=ExpectedSettings(
            dataset=dataset, split=split, models=tuple(folders), fingerprint=fingerprint
        ),
        name=name,
        output=output,
        aggregate=aggregate,
        metrics=metrics or EvalSettings(),
    )


def output_dir(cfg: EvaluateConfig) -> Path:
    return Path(expand_location(cfg.output)) if cfg.output else runs_dir() / cfg.name


def load_runs(cfg: EvaluateConfig) -> list[Predictions]:
    """Read and check every predictions folder; refuse what does not match expectations.

    Raises:
        PredictionFileError: a folder breaks the contract.
        PredictionMismatchError: a folder is for other data or another model, or the
            runs are not on the same input rows.
    """
    e = cfg.expected
    runs = []
    for i, path in enumerate(cfg.predictions):
        preds = read_predictions(path)
        check_expected(
            preds,
            dataset=e.dataset,
            split=e.split,
            model=e.models[i] if e.models else "",
            fingerprint=e.fingerprint,
        )
        runs.append(preds)
    fps = {r.manifest.dataset_fingerprint for r in runs}
    if len(fps) > 1:
        raise PredictionMismatchError(
            "the predictions folders were made on different input rows, so their figures "
            "would not be comparable: "
            + "; ".join(f"{r.path} ({r.label}): {r.manifest.dataset_fingerprint}" for r in runs)
        )
    return runs


def _unique_labels(runs: list[Predictions]) -> list[str]:
    labels: list[str] = []
    for r in runs:
        label, n = r.label, 2
        while label in labels:
            label, n = f"{r.label}-{n}", n + 1
        labels.append(label)
    return labels


def vote_run(runs: list[Predictions], out: Path) -> tuple[Predictions, dict[str, Any]]:
    """The vote of ``runs``, written as a predictions folder ``out/vote_predictions``."""
    table, summary = aggregate(runs)
    m0 = runs[0].manifest
    manifest: PredictionManifest = write_predictions(
        out / "vote_predictions",
        table,
        model="vote(" + ",".join(r.label for r in runs) + ")",
        model_label="vote",
        dataset=m0.dataset,
        split=m0.split,
        dataset_fingerprint=m0.dataset_fingerprint,
        config={"method": "confidence-weighted majority vote", "runs": [r.path for r in runs]},
        overwrite=True,
    )
    return Predictions(str(out / "vote_predictions"), manifest, table), summary


def _rows_table(label: str, scored: list[dict[str, Any]]) -> pa.Table:
    cols = ["sample_id", "task", "answer_type", "answer", "pred_answer", "confidence",
            "correct", "recall", "json_valid", "blank_correct", "failures", "error"]  # fmt: skip
    data = {c: [r.get(c) for r in scored] for c in cols}
    data["failures"] = [r["failures"] for r in scored]
    return pa.table({"run": [label] * len(scored), **data})


def main(cfg: EvaluateConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    runs = load_runs(cfg)  # refuses before anything is written
    out = output_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    labels = _unique_labels(runs)
    aggregate_summary = None
    if cfg.aggregate:
        vote, aggregate_summary = vote_run(runs, out)
        runs, labels = [*runs, vote], [*labels, "vote"]

    report_runs, row_tables, scored_runs = [], [], []
    for label, preds in zip(labels, runs, strict=True):
        metrics, scored = run_metrics(preds.rows(), cfg.metrics)
        scored_runs.append(scored)
        report_runs.append(
            {
                "label": label,
                "path": preds.path,
                "manifest": preds.manifest.to_dict(),
                "metrics": metrics,
            }
        )
        row_tables.append(_rows_table(label, scored))
    pq.write_table(pa.concat_tables(row_tables, promote_options="permissive"), out / "rows.parquet")

    m0 = runs[0].manifest
    report = {
        "format": REPORT_FORMAT,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "dataset": m0.dataset,
        "split": m0.split,
        "fingerprint": m0.dataset_fingerprint,
        "n_rows": runs[0].table.num_rows,
        "settings": to_dict(cfg),
        "aggregate": aggregate_summary,
        "runs": report_runs,
        # each run against the one before it, on the same rows (paired bootstrap)
        "paired": uncertainty.paired(labels, scored_runs) if len(runs) > 1 else [],
    }
    files = write_report(out, report)
    summary = {
        "output_dir": str(out),
        "report": str(files["report.md"]),
        "report_json": str(files["report.json"]),
        "plots": sorted(str(p) for name, p in files.items() if name.endswith(".png")),
        "dataset": m0.dataset,
        "split": m0.split,
        "rows": report["n_rows"],
        "runs": {r["label"]: headline(r["metrics"]) for r in report_runs},
        "intervals": {r["label"]: r["metrics"]["intervals"] for r in report_runs},
        "paired": report["paired"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
    _print(summary)
    return summary


def _print(s: dict[str, Any]) -> None:
    print("\n=== MedRay evaluation ===")
    print(
        f"{s['dataset']} [{s['split']}]: {s['rows']} rows, {len(s['runs'])} run(s), {s['seconds']} s"
    )
    keys = ["accuracy", "closed accuracy", "open accuracy", "JSON validity", "AURC",
            "flip gap (ROI - random)", "MCQ accuracy", "BLEU", "unreadable rows"]  # fmt: skip
    keys = [k for k in keys if any(h.get(k) is not None for h in s["runs"].values())]
    width = max(len(x) for x in [*s["runs"], "run"])
    print("  ".join(["run".ljust(width), *[k.rjust(max(8, len(k))) for k in keys]]))
    for label, h in s["runs"].items():
        print("  ".join([label.ljust(width), *[fmt(h.get(k)).rjust(max(8, len(k))) for k in keys]]))
    for pair in s["paired"]:  # paired bootstrap, each run against the one before it
        for m, d in pair["metrics"].items():
            if m in ("accuracy", "closed accuracy", "MCQ accuracy"):
                print(
                    f"{pair['b']} - {pair['a']} {m}: {d['delta']:+.3f} "
                    f"[{d['low']:+.3f}, {d['high']:+.3f}] (95%, paired over {d['n']} rows)"
                )
    print(f"REPORT: {s['report']}")


if __name__ == "__main__":
    setup_logging()
    main(
        parse_args(
            EvaluateConfig,
            sys.argv[1:],
            prog="python -m jobs.evaluate",
            default_config=DEFAULT_CONFIG,
        )
    )
