"""The evaluation report: ``report.json`` (every figure), ``report.md`` (tables) and PNG plots.

One report covers one or more runs on the same input rows (base, SFT, GRPO, the vote
of several runs). The plots are drawn by :mod:`medray.eval.plots`; the intervals and
paired differences come from :mod:`medray.eval.uncertainty`. Every number a plot or table shows is in
``report.json``, so the report can be re-read (``medray report show``) and compared
(``medray report compare``) without the predictions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medray.eval import report_sections as sections
from medray.eval import uncertainty
from medray.eval.metrics import headline
from medray.eval.plots import PLOTS
from medray.eval.report_sections import markdown_table

log = logging.getLogger(__name__)

REPORT_FORMAT = "medray-eval-report/1"
DISCLAIMER = (
    "> **Research use only.** These figures describe a research model on a benchmark; "
    "they are not evidence of clinical performance."
)


class ReportError(ValueError):
    """A folder is not an evaluation report (or a report of an unknown format)."""


def headline_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows ``[metric, value per run...]`` over the union of the runs' headline keys,
    leaving out metrics no run has."""
    heads = [headline(r["metrics"]) for r in runs]
    keys: list[str] = []
    for h in heads:
        keys += [k for k in h if k not in keys]
    rows = [[k, *(h.get(k) for h in heads)] for k in keys]
    return [r for r in rows if any(v is not None for v in r[1:])]


def render_markdown(report: Mapping[str, Any]) -> str:
    """The Markdown report of a ``report.json`` dict."""
    runs = report["runs"]
    labels = [r["label"] for r in runs]
    lines = [
        "# MedRay evaluation report",
        "",
        DISCLAIMER,
        "",
        f"- dataset: `{report['dataset']}`, split `{report['split']}`, {report['n_rows']} rows "
        f"(fingerprint `{report['fingerprint']}`)",
        f"- runs: {', '.join(f'**{x}**' for x in labels)}; created {report['created']}",
        "",
        "## Headline",
        "",
        markdown_table(["metric", *labels], headline_rows(runs)),
        "",
        "Accuracy follows the VQA-RAD / SLAKE protocol (normalised exact match; yes/no "
        "canonicalised for closed questions); unreadable rows count as wrong. "
        "accuracy@τ / coverage@τ: answering only when the answer's confidence is at least τ.",
        "",
    ]
    if report.get("aggregate"):
        lines += [vote_line(report["aggregate"]), ""]
    lines += uncertainty.section(report)
    figs = report.get("figures", {})
    lines += ["## Accuracy by type", ""]
    if "accuracy_by_type" in figs:
        lines += [f"![accuracy by type]({figs['accuracy_by_type']})", ""]
    lines += sections.breakdowns(runs) or ["No VQA rows.", ""]
    lines += ["## Closed yes/no questions", ""]
    if "confusion_closed" in figs:
        lines += [f"![confusion matrix]({figs['confusion_closed']})", ""]
        for r in runs:
            cm = r["metrics"].get("confusion_yes_no")
            if cm:
                lines += [
                    f"*{r['label']}*",
                    "",
                    markdown_table(
                        ["reference / predicted", *cm["predicted_labels"]],
                        [
                            [lab, *row]
                            for lab, row in zip(cm["reference_labels"], cm["matrix"], strict=True)
                        ],
                    ),
                    "",
                ]
    else:
        lines += ["No closed yes/no questions.", ""]
    lines += ["## Selective prediction (risk-coverage)", ""]
    if "risk_coverage" in figs:
        lines += [f"![risk-coverage curve]({figs['risk_coverage']})", ""]
    lines += sections.thresholds(runs) or ["No confidences.", ""]
    lines += sections.captions(runs)
    lines += ["## Counterfactual faithfulness and the text prior", ""]
    lines += sections.faithfulness(runs)
    lines += sections.text_and_retrieval(runs)
    lines += ["## Latency", ""]
    if "latency" in figs:
        lines += [f"![latency histogram]({figs['latency']})", ""]
    lat_keys = ["n", "mean_ms", "p50_ms", "p95_ms", "max_ms"]
    lines += [
        markdown_table(
            ["", *labels], [[k, *[r["metrics"]["latency"].get(k) for r in runs]] for k in lat_keys]
        ),
        "",
    ]
    lines += sections.errors(runs)
    lines += ["## Runs", ""]
    rows = [
        [
            r["label"],
            r["manifest"]["model"],
            r["manifest"].get("adapter"),
            r["path"],
            r["manifest"].get("created"),
        ]
        for r in runs
    ]
    lines += [markdown_table(["label", "model", "adapter", "predictions", "created"], rows), ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- files


def write_report(out_dir: str | Path, report: dict[str, Any]) -> dict[str, Path]:
    """Write the plots, ``report.json`` and ``report.md`` into ``out_dir``.

    Args:
        out_dir: the evaluation's output folder (created).
        report: ``format``, ``created``, ``dataset``, ``split``, ``fingerprint``,
            ``n_rows``, ``settings``, ``runs`` (each ``label``, ``path``, ``manifest``,
            ``metrics``) and optional ``aggregate``; ``figures`` is filled in here.

    Returns:
        Paths of the files written, by name (``report.json``, ``report.md``, plots).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    report["figures"] = {}
    for name, (filename, plot) in PLOTS.items():
        path = out / filename
        if plot(report["runs"], path):
            report["figures"][name] = filename
            written[filename] = path
        elif path.exists():
            path.unlink()  # a stale plot of an earlier report in this folder
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(report))
    written["report.json"] = out / "report.json"
    written["report.md"] = out / "report.md"
    log.info("report written to %s", out / "report.md")
    return written


def vote_line(a: Mapping[str, Any]) -> str:
    """The report's sentence on the vote run, from ``aggregate``'s summary."""
    head = f"**vote** is the confidence-weighted majority vote of {', '.join(a['runs'])}: "
    answered = a["n"] - a["no_vote"]
    if a.get("unanimous_rate") is None or answered <= 0:
        return (
            head
            + f"no run answered any of the {a['n']} questions, so there was nothing to vote on."
        )
    agree = (
        f"all voters agree on {100 * a['unanimous_rate']:.1f}% of the {answered} questions answered"
    )
    none = f"; {a['no_vote']} had no answer from any run" if a["no_vote"] else ""
    return head + agree + none + "."


def load_report(run_dir: str | Path) -> dict[str, Any]:
    """Read ``report.json`` of an evaluation output folder.

    Raises:
        ReportError: no report there, or one of another format.
    """
    path = Path(run_dir) / "report.json"
    if not path.is_file():
        raise ReportError(
            f"{run_dir}: no report.json; pass the output folder of `python -m jobs.evaluate`"
        )
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON: {e}") from None
    if data.get("format") != REPORT_FORMAT:
        raise ReportError(f"{path}: format {data.get('format')!r}, expected {REPORT_FORMAT!r}")
    return data
