"""The evaluation report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot
state): ``risk_coverage.png`` (selective accuracy against coverage, one line per run, by
confidence and, beside it, by caption-question consistency),
``accuracy_by_type.png`` (accuracy per answer type, content type and modality, bars per
run), ``confusion_closed.png`` (closed yes/no questions, one matrix per run) and
``latency.png`` (latency histogram per run). Each takes the report's runs and returns False
when no run has the data (the report then says so instead of showing an empty plot)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


LINESTYLES = ("-", "--", "-.", ":")


def run_styles(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """One colour and line style per run label, the same in every panel and plot (a run
    that is missing from a panel does not shift the others' colours; runs with identical
    curves, e.g. a vote that follows one voter, stay visible through their line styles)."""
    return {
        r["label"]: {"color": f"C{i % 10}", "linestyle": LINESTYLES[i % len(LINESTYLES)]}
        for i, r in enumerate(runs)
    }


def _risk_coverage_axes(ax, curves, title: str, score: str, styles) -> None:
    from medray.eval.report_sections import fmt

    for label, cal in curves:
        c = cal["curve"]
        ax.step(
            c["coverage"],
            c["accuracy"],
            where="post",
            marker=".",
            label=f"{label} (AURC {fmt(cal['aurc'])})",
            **styles[label],
        )
        for t in cal["thresholds"]:
            if t["accuracy"] is not None:
                ax.annotate(f"τ{t['tau']:g}", (t["coverage"], t["accuracy"]), fontsize=7)
    ax.set_xlabel(f"coverage (share answered, highest {score} first)")
    ax.set_ylabel("selective accuracy")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)


def _curves(runs: Sequence[Mapping[str, Any]], *path: str) -> list[tuple[str, Mapping]]:
    from medray.eval.metrics import get_path

    out = []
    for r in runs:
        cal = get_path(r["metrics"], *path)
        if cal and cal["curve"]["coverage"]:
            out.append((r["label"], cal))
    return out


def plot_risk_coverage(runs: Sequence[Mapping[str, Any]], path: Path) -> bool:
    """Selective accuracy vs coverage, one line per run, by the answer's confidence and,
    beside it where batch inference scored captions, by caption-question consistency;
    False if no run has either score."""
    by_conf = _curves(runs, "calibration")
    by_cons = _curves(runs, "captions", "consistency", "calibration")
    panels = [
        (curves, title, score)
        for curves, title, score in (
            (by_conf, "Answering above a confidence threshold", "confidence"),
            (by_cons, "... above a caption-question consistency", "consistency"),
        )
        if curves
    ]
    if not panels:
        return False
    fig = _figure(6.4 * len(panels), 4.8)
    styles = run_styles(runs)
    for k, (curves, title, score) in enumerate(panels, start=1):
        _risk_coverage_axes(fig.add_subplot(1, len(panels), k), curves, title, score, styles)
    fig.suptitle("Risk-coverage")
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
    from medray.eval.report_sections import fmt

    hists = [
        (r["label"], r["metrics"]["latency"])
        for r in runs
        if r["metrics"]["latency"].get("histogram")
    ]
    if not hists:
        return False
    fig = _figure()
    ax = fig.add_subplot()
    colours = {k: v["color"] for k, v in run_styles(runs).items()}
    for label, lat in hists:
        h = lat["histogram"]
        ax.stairs(
            h["counts"],
            h["edges"],
            fill=True,
            alpha=0.45,
            color=colours[label],
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
