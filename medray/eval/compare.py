"""Two evaluation runs side by side: the headline metrics of each, their difference, who is ahead.

A *run* is one model's column of an evaluation report (``report.json`` of
``jobs/evaluate.py``); a report with several runs (base, SFT, GRPO) names the one to
compare by its label. The delta is ``B - A``; ``better`` says which run is ahead on that
metric (lower is better for AURC, ECE, latency, perplexity, the random-region flip
rate and unreadable rows; none for the row count and the blank-image accuracy; higher
for the rest). Comparing runs on different input rows
is allowed but flagged: their numbers are not comparable.

Given the reports' scored rows (``rows.parquet``), runs on the same rows also get a paired
bootstrap of each per-row metric (:mod:`medray.eval.uncertainty`): the difference with
its 95% interval, which says whether the rows support it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from medray.cli import table
from medray.eval import uncertainty
from medray.eval.metrics import LOWER_IS_BETTER, NO_DIRECTION, headline
from medray.eval.report import ReportError
from medray.eval.report_sections import fmt, markdown_table


def pick_run(report: Mapping[str, Any], label: str | None, where: str) -> Mapping[str, Any]:
    """The run labelled ``label`` in a report (the first run when ``label`` is None).

    Raises:
        ReportError: no run with that label (the message lists the labels).
    """
    runs = report["runs"]
    if label is None:
        return runs[0]
    for r in runs:
        if r["label"] == label:
            return r
    raise ReportError(f"{where}: no run labelled {label!r}; runs: {[r['label'] for r in runs]}")


def compare(
    report_a: Mapping[str, Any],
    report_b: Mapping[str, Any],
    label_a: str | None = None,
    label_b: str | None = None,
    where_a: str = "A",
    where_b: str = "B",
    rows_a: Iterable[Mapping[str, Any]] | None = None,
    rows_b: Iterable[Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """Compare one run of ``report_a`` with one run of ``report_b``.

    Returns:
        ``a`` / ``b`` (where, label, model, dataset, split, fingerprint), ``comparable``
        (same input rows), ``warnings``, ``rows``: ``[metric, a, b, delta, better]``, and
        ``paired``: ``{metric: paired difference}`` when both reports' scored rows
        (``rows_a`` / ``rows_b``) are given and the runs are comparable, else ``{}``.
    """
    ra, rb = pick_run(report_a, label_a, where_a), pick_run(report_b, label_b, where_b)
    ha, hb = headline(ra["metrics"]), headline(rb["metrics"])
    rows = []
    for key in list(dict.fromkeys([*ha, *hb])):
        a, b = ha.get(key), hb.get(key)
        if a is None and b is None:
            continue
        delta = b - a if isinstance(a, int | float) and isinstance(b, int | float) else None
        better = None
        if delta is not None and key not in NO_DIRECTION:
            if abs(delta) < 1e-12:
                better = "="
            else:
                b_ahead = (delta < 0) if key in LOWER_IS_BETTER else (delta > 0)
                better = "B" if b_ahead else "A"
        rows.append([key, a, b, delta, better])

    def side(report: Mapping[str, Any], run: Mapping[str, Any], where: str) -> dict[str, Any]:
        return {
            "where": where,
            "label": run["label"],
            "model": run["manifest"]["model"],
            "adapter": run["manifest"].get("adapter"),
            "dataset": report["dataset"],
            "split": report["split"],
            "fingerprint": report["fingerprint"],
        }

    a_side, b_side = side(report_a, ra, where_a), side(report_b, rb, where_b)
    warnings = []
    if a_side["fingerprint"] != b_side["fingerprint"]:
        warnings.append(
            f"the runs were evaluated on different input rows ({a_side['dataset']} "
            f"{a_side['split']} vs {b_side['dataset']} {b_side['split']}): the numbers are "
            "not comparable"
        )
    paired = {}
    if rows_a is not None and rows_b is not None and not warnings:
        sa = uncertainty.row_scores(r for r in rows_a if r["run"] == ra["label"])
        sb = uncertainty.row_scores(r for r in rows_b if r["run"] == rb["label"])
        paired = {
            m: d
            for m in uncertainty.ROW_METRICS
            if m in sa and m in sb and (d := uncertainty.paired_difference(sa[m], sb[m]))
        }
    return {
        "a": a_side,
        "b": b_side,
        "comparable": not warnings,
        "warnings": warnings,
        "rows": rows,
        "paired": paired,
    }


def _paired_rows(result: Mapping[str, Any]) -> list[list[Any]]:
    return [
        [m, d["n"], f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]", d["b_ahead_share"]]
        for m, d in result.get("paired", {}).items()
    ]


PAIRED_HEADER = ["metric (paired, same rows)", "n", "B - A [95%]", "resamples B ahead"]
PAIRED_NOTE = (
    "Paired bootstrap over the rows both runs scored: an interval without 0 is a "
    "difference these rows support."
)


def render_markdown(result: Mapping[str, Any]) -> str:
    """The comparison as Markdown (a header per side, warnings, the metric table)."""
    a, b = result["a"], result["b"]
    lines = [
        "# MedRay evaluation: comparison",
        "",
        f"- **A** = `{a['label']}` ({a['model']}"
        + (f" + {a['adapter']}" if a["adapter"] else "")
        + f") from `{a['where']}`",
        f"- **B** = `{b['label']}` ({b['model']}"
        + (f" + {b['adapter']}" if b["adapter"] else "")
        + f") from `{b['where']}`",
        "",
    ]
    lines += [f"> **Warning:** {w}" for w in result["warnings"]]
    if result["warnings"]:
        lines.append("")
    headers = ["metric", f"A: {a['label']}", f"B: {b['label']}", "B - A", "ahead"]
    lines.append(markdown_table(headers, result["rows"]))
    if result.get("paired"):
        lines += ["", PAIRED_NOTE, "", markdown_table(PAIRED_HEADER, _paired_rows(result))]
    return "\n".join(lines) + "\n"


def render_text(result: Mapping[str, Any]) -> str:
    """The comparison as an aligned plain-text table for the terminal."""
    a, b = result["a"], result["b"]
    header = ["metric", f"A: {a['label']}", f"B: {b['label']}", "B - A", "ahead"]
    lines = [f"A = {a['label']} ({a['where']}), B = {b['label']} ({b['where']})"]
    lines += [f"WARNING: {w}" for w in result["warnings"]]
    rows = [[fmt(v) for v in row] for row in result["rows"]]
    lines.append(table.render(header, rows, right=range(1, len(header))))
    if result.get("paired"):
        paired = [[fmt(v) for v in row] for row in _paired_rows(result)]
        lines += ["", PAIRED_NOTE, table.render(PAIRED_HEADER, paired, right=range(1, 4))]
    return "\n".join(lines)
