"""The evaluation report: ``report.json`` (every figure), ``report.md`` (tables) and PNG plots.

One report covers one or more runs on the same input rows (base, SFT, GRPO, the vote
of several runs). Plots, drawn with matplotlib's Agg canvas (no display, no pyplot
state): ``risk_coverage.png`` (selective accuracy against coverage, one line per run),
``accuracy_by_type.png`` (accuracy per answer type, content type and modality, bars per
run), ``confusion_closed.png`` (closed yes/no questions, one matrix per run) and
``latency.png`` (latency histogram per run). Every number a plot or table shows is in
``report.json``, so the report can be re-read (``medray report show``) and compared
(``medray report compare``) without the predictions.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medray.eval import uncertainty
from medray.eval.metrics import headline

log = logging.getLogger(__name__)

REPORT_FORMAT = "medray-eval-report/1"
DISCLAIMER = (
    "> **Research use only.** These figures describe a research model on a benchmark; "
    "they are not evidence of clinical performance."
)


class ReportError(ValueError):
    """A folder is not an evaluation report (or a report of an unknown format)."""


def fmt(v: Any) -> str:
    """A table cell: ``-`` for None, 3 decimals below 10, 1 decimal above, ints as they are."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub Markdown table (cells through :func:`fmt`, ``|`` escaped)."""

    def cell(v: Any) -> str:
        return fmt(v).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in headers) + " |"]
    lines.append("| " + " | ".join("---" for _ in headers) + " |")
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def headline_rows(runs: Sequence[Mapping[str, Any]]) -> list[list[Any]]:
    """Rows ``[metric, value per run...]`` over the union of the runs' headline keys,
    leaving out metrics no run has."""
    heads = [headline(r["metrics"]) for r in runs]
    keys: list[str] = []
    for h in heads:
        keys += [k for k in h if k not in keys]
    rows = [[k, *(h.get(k) for h in heads)] for k in keys]
    return [r for r in rows if any(v is not None for v in r[1:])]


# ----------------------------------------------------------------------------- plots


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def plot_risk_coverage(runs: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Selective accuracy vs coverage, one line per run; False if no run has confidences."""
    curves = [
        (r["label"], r["metrics"]["calibration"])
        for r in runs
        if r["metrics"].get("calibration") and r["metrics"]["calibration"]["curve"]["coverage"]
    ]
    if not curves:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    for label, cal in curves:
        c = cal["curve"]
        ax.step(
            c["coverage"],
            c["accuracy"],
            where="post",
            marker=".",
            label=f"{label} (AURC {fmt(cal['aurc'])})",
        )
        for t in cal["thresholds"]:
            if t["accuracy"] is not None:
                ax.annotate(f"τ{t['tau']:g}", (t["coverage"], t["accuracy"]), fontsize=7)
    ax.set_xlabel("coverage (share of questions answered)")
    ax.set_ylabel("selective accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Risk-coverage: answering only above a confidence threshold")
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_accuracy_by_type(runs: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Grouped accuracy bars per answer type / content type / modality; False without VQA."""
    import numpy as np

    panels = []
    for key in ("by_answer_type", "by_content_type", "by_modality", "by_organ"):
        if any((r["metrics"].get("vqa") or {}).get(key) for r in runs):
            panels.append(key)
    if not panels:
        return False
    fig = _figure(6.4, 2.8 * len(panels))
    width = 0.8 / len(runs)
    for i, key in enumerate(panels):
        ax = fig.add_subplot(len(panels), 1, i + 1)
        groups = sorted({g for r in runs for g in ((r["metrics"].get("vqa") or {}).get(key) or {})})
        x = np.arange(len(groups))
        for j, r in enumerate(runs):
            table = (r["metrics"].get("vqa") or {}).get(key) or {}
            vals = [(table.get(g) or {}).get("accuracy") or 0.0 for g in groups]
            ax.bar(x + j * width - 0.4 + width / 2, vals, width, label=r["label"])
        ax.set_xticks(x, groups, rotation=20, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("accuracy")
        ax.set_title(key.replace("by_", "accuracy by ").replace("_", " "), fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        if i == 0:
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_confusion(runs: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Closed yes/no confusion matrices, one per run; False without closed yes/no rows."""
    import numpy as np

    mats = [
        (r["label"], r["metrics"]["confusion_yes_no"])
        for r in runs
        if r["metrics"].get("confusion_yes_no")
    ]
    if not mats:
        return False
    fig = _figure(3.4 * len(mats), 3.4)
    for i, (label, cm) in enumerate(mats):
        ax = fig.add_subplot(1, len(mats), i + 1)
        m = np.array(cm["matrix"])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(1, int(m.max())))
        for (y, x), v in np.ndenumerate(m):
            ax.text(
                x,
                y,
                str(v),
                ha="center",
                va="center",
                color="black" if v < m.max() / 2 else "white",
            )
        ax.set_xticks(range(len(cm["predicted_labels"])), cm["predicted_labels"])
        ax.set_yticks(range(len(cm["reference_labels"])), cm["reference_labels"])
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_title(f"{label} (n={cm['n']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    return True


def plot_latency(runs: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Latency histograms, one per run (overlaid); False if no row was inferred."""
    hists = [
        (r["label"], r["metrics"]["latency"])
        for r in runs
        if r["metrics"]["latency"].get("histogram")
    ]
    if not hists:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    for label, lat in hists:
        h = lat["histogram"]
        ax.stairs(
            h["counts"],
            h["edges"],
            fill=True,
            alpha=0.45,
            label=f"{label} (p50 {fmt(lat['p50_ms'])} ms)",
        )
    ax.set_xlabel("latency per row (ms)")
    ax.set_ylabel("rows")
    ax.legend(fontsize=8)
    ax.set_title("Inference latency")
    fig.tight_layout()
    fig.savefig(path)
    return True


PLOTS = {
    "risk_coverage": ("risk_coverage.png", plot_risk_coverage),
    "accuracy_by_type": ("accuracy_by_type.png", plot_accuracy_by_type),
    "confusion_closed": ("confusion_closed.png", plot_confusion),
    "latency": ("latency.png", plot_latency),
}


# ----------------------------------------------------------------------------- markdown


def _section_breakdowns(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    for key in ("by_answer_type", "by_content_type", "by_modality", "by_organ", "by_language"):
        tables = [(r["metrics"].get("vqa") or {}).get(key) or {} for r in runs]
        groups = sorted({g for t in tables for g in t})
        if not groups:
            continue
        rows = [
            [
                g,
                next(t[g]["n"] for t in tables if g in t),
                *[(t.get(g) or {}).get("accuracy") for t in tables],
            ]
            for g in groups
        ]
        out += [
            f"**{key.replace('by_', 'by ').replace('_', ' ')}**",
            "",
            markdown_table([key[3:].replace("_", " "), "n", *[r["label"] for r in runs]], rows),
            "",
        ]
    return out


def _section_thresholds(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    cals = [r["metrics"].get("calibration") for r in runs]
    if not any(cals):
        return []
    taus = [t["tau"] for t in next(c for c in cals if c)["thresholds"]]
    rows = []
    for i, tau in enumerate(taus):
        row: list[Any] = [f"τ = {tau:g}"]
        for c in cals:
            t = c["thresholds"][i] if c else {}
            row += [t.get("coverage"), t.get("accuracy")]
        rows.append(row)
    headers = ["threshold", *[f"{r['label']} {x}" for r in runs for x in ("coverage", "accuracy")]]
    extra = [
        ["AURC", *[c and c["aurc"] for c in cals]],
        ["e-AURC", *[c and c["e_aurc"] for c in cals]],
        ["ECE", *[c and c["ece"] for c in cals]],
        ["rows without confidence", *[c and c["n_without_confidence"] for c in cals]],
    ]
    return [
        markdown_table(headers, rows),
        "",
        markdown_table(["", *[r["label"] for r in runs]], extra),
        "",
    ]


def _section_faithfulness(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    keys = [
        ("faithfulness", "roi_flip_rate", "ROI inpainted: flip rate"),
        ("faithfulness", "random_flip_rate", "random region inpainted: flip rate"),
        ("faithfulness", "flip_gap", "gap (ROI - random): the faithfulness signal"),
        ("faithfulness", "faithful_rate", "flips for ROI, not for random"),
        ("faithfulness", "n_both", "rows with both counterfactuals"),
        ("blank_control", "accuracy", "accuracy (rows with a blank-image answer)"),
        ("blank_control", "blank_accuracy", "accuracy with a blank image (text prior)"),
        ("blank_control", "image_gain", "what the image adds"),
        ("blank_control", "blank_agreement", "blank answer = real answer"),
    ]
    rows = [
        [label, *[(r["metrics"].get(sec) or {}).get(k) for r in runs]] for sec, k, label in keys
    ]
    rows = [r for r in rows if any(v is not None for v in r[1:])]
    if not rows:
        return [
            "No counterfactual or blank-image answers in these predictions (batch inference "
            "writes them with its counterfactual option).",
            "",
        ]
    return [markdown_table(["", *[r["label"] for r in runs]], rows), ""]


def _section_other(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = []
    s_keys = [
        "json_validity",
        "repaired_rate",
        "box_rate",
        "malformed_box_rate",
        "n_with_ref_boxes",
        "box_iou",
        "best_iou",
        "box_recall@0.5",
        "box_precision@0.5",
    ]
    rows = [[k, *[(r["metrics"].get("structure") or {}).get(k) for r in runs]] for k in s_keys]
    out += [
        "## Structured output",
        "",
        markdown_table(
            ["", *[r["label"] for r in runs]],
            [x for x in rows if any(v is not None for v in x[1:])],
        ),
        "",
    ]
    for sec, title, keys in (
        (
            "text",
            "Generated text (sacrebleu BLEU 0-100, rouge-score F 0-1)",
            ["n", "bleu", "sentence_bleu", "rouge1", "rouge2", "rougeL"],
        ),
        ("mcq", "Multiple choice (text QA model)", ["n", "accuracy", "n_perplexity", "perplexity"]),
    ):
        if any(r["metrics"].get(sec) for r in runs):
            rows = [[k, *[(r["metrics"].get(sec) or {}).get(k) for r in runs]] for k in keys]
            out += [f"## {title}", "", markdown_table(["", *[r["label"] for r in runs]], rows), ""]
    if any(r["metrics"].get("retrieval") for r in runs):
        out += ["## Retrieval", ""]
        for kind, note in (
            ("embedding", "image <-> reference text, from the run's embeddings"),
            ("ranked", "ranked result lists vs relevant ids"),
        ):
            tabs = [(r["metrics"].get("retrieval") or {}).get(kind) or {} for r in runs]
            keys = [k for k in dict.fromkeys(k for t in tabs for k in t)]
            if keys:
                out += [
                    f"*{note}*",
                    "",
                    markdown_table(
                        ["", *[r["label"] for r in runs]],
                        [[k, *[t.get(k) for t in tabs]] for k in keys],
                    ),
                    "",
                ]
    return out


def _section_errors(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    out = ["## Error analysis", ""]
    kinds = list(dict.fromkeys(k for r in runs for k in r["metrics"]["errors"]["kinds"]))
    if not kinds:
        return [*out, "No failures.", ""]
    rows = []
    for k in kinds:
        cells = []
        for r in runs:
            e = r["metrics"]["errors"]["kinds"].get(k)
            cells.append(f"{e['count']} ({e['rate']:.1%})" if e else "0")
        meaning = next(
            r["metrics"]["errors"]["kinds"][k]["meaning"]
            for r in runs
            if k in r["metrics"]["errors"]["kinds"]
        )
        rows.append([k, meaning, *cells])
    out += [markdown_table(["failure", "meaning", *[r["label"] for r in runs]], rows), ""]
    out += ["What to do about each (examples are sample ids of the first run that shows it):", ""]
    for k in kinds:
        r0 = next(r for r in runs if k in r["metrics"]["errors"]["kinds"])
        e = r0["metrics"]["errors"]["kinds"][k]
        out.append(
            f"- **{k}**: {e['suggestion']}. Examples ({r0['label']}): {', '.join(e['examples'])}"
        )
    return [*out, ""]


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
    lines += _section_breakdowns(runs) or ["No VQA rows.", ""]
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
    lines += _section_thresholds(runs) or ["No confidences.", ""]
    lines += ["## Counterfactual faithfulness and the text prior", ""]
    lines += _section_faithfulness(runs)
    lines += _section_other(runs)
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
    lines += _section_errors(runs)
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
