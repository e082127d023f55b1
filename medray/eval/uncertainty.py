"""How sure the headline figures are: bootstrap intervals over rows, and paired differences.

A figure such as closed accuracy is the mean of a per-row score (1 for a correct answer,
0 for a wrong one). :func:`row_scores` gives each row's scores for the metrics below;
:func:`interval` the percentile-bootstrap 95% interval of their mean
(``scipy.stats.bootstrap``, 2,000 resamples, seeded, so one input gives one interval).

Two runs evaluated on the same rows (SFT and GRPO on the held-out split) are compared
with a *paired* bootstrap (:func:`paired_difference`): the rows both runs scored are
resampled together, so the difference is judged against row-to-row variation of the
difference itself, which is much narrower than two independent intervals when the runs
agree on most rows. ``b_ahead_share`` is the share of resamples in which B's mean is
higher; an interval that excludes 0 is a difference the rows support at that level.

Metrics (``ROW_METRICS``), each over the rows it applies to:

* ``accuracy``, ``closed accuracy``, ``open accuracy``: VQA rows, ``correct``;
* ``JSON validity``: VQA rows, the structured answer parsed (``json_valid``);
* ``blank-image accuracy``: VQA rows with a blank-image answer (``blank_correct``);
* ``MCQ accuracy``: MCQ rows, ``correct``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

N_RESAMPLES = 2000
LEVEL = 0.95
SEED = 0
ROW_METRICS = (
    "accuracy",
    "closed accuracy",
    "open accuracy",
    "JSON validity",
    "blank-image accuracy",
    "MCQ accuracy",
)


def _score(row: Mapping[str, Any], metric: str) -> float | None:
    task, kind = row.get("task"), row.get("answer_type")
    if metric == "MCQ accuracy":
        value = row.get("correct") if task == "mcq" else None
    elif task != "vqa":
        return None
    elif metric == "JSON validity":
        value = row.get("json_valid")
    elif metric == "blank-image accuracy":
        value = row.get("blank_correct")
    elif metric == "accuracy" or metric == f"{kind} accuracy":
        value = row.get("correct")
    else:
        return None
    return None if value is None else float(bool(value))


def row_scores(rows: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {sample_id: score}}`` for the metrics of ``ROW_METRICS`` (scored rows of
    :func:`medray.eval.metrics.score_rows`, or the ``rows.parquet`` of a report)."""
    out: dict[str, dict[str, float]] = {m: {} for m in ROW_METRICS}
    for row in rows:
        for m in ROW_METRICS:
            s = _score(row, m)
            if s is not None:
                out[m][row["sample_id"]] = s
    return {m: v for m, v in out.items() if v}


def _bootstrap_mean(x: np.ndarray, level: float, n_resamples: int, seed: int):
    """(low, high, resampled means); a constant sample has a zero-width interval."""
    if x.size < 2 or np.all(x == x[0]):
        return float(x.mean()), float(x.mean()), np.full(1, x.mean())
    from scipy.stats import bootstrap

    res = bootstrap(
        (x,),
        np.mean,
        n_resamples=n_resamples,
        confidence_level=level,
        method="percentile",
        vectorized=True,
        rng=np.random.default_rng(seed),
    )
    ci = res.confidence_interval
    return float(ci.low), float(ci.high), res.bootstrap_distribution


def interval(
    values: Sequence[float], level: float = LEVEL, n_resamples: int = N_RESAMPLES, seed: int = SEED
) -> dict[str, Any] | None:
    """``{"n", "mean", "low", "high", "level"}`` of the mean of ``values`` (None if empty)."""
    x = np.asarray(values, dtype=np.float64)
    if not x.size:
        return None
    low, high, _ = _bootstrap_mean(x, level, n_resamples, seed)
    return {"n": int(x.size), "mean": float(x.mean()), "low": low, "high": high, "level": level}


def paired_difference(
    a: Mapping[str, float],
    b: Mapping[str, float],
    level: float = LEVEL,
    n_resamples: int = N_RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any] | None:
    """B - A over the rows both scored (by sample id), with its paired bootstrap interval.

    Returns:
        ``n``, ``a`` and ``b`` (their means on those rows), ``delta``, ``low``, ``high``,
        ``level`` and ``b_ahead_share``; None when no row is in both.
    """
    ids = [k for k in a if k in b]
    if not ids:
        return None
    x = np.array([a[k] for k in ids], dtype=np.float64)
    y = np.array([b[k] for k in ids], dtype=np.float64)
    d = y - x
    low, high, dist = _bootstrap_mean(d, level, n_resamples, seed)
    return {
        "n": len(ids),
        "a": float(x.mean()),
        "b": float(y.mean()),
        "delta": float(d.mean()),
        "low": low,
        "high": high,
        "level": level,
        "b_ahead_share": float(np.mean(np.asarray(dist) > 0)),
    }


def intervals(scored: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each ``ROW_METRICS`` figure of one run with its interval (a run's ``metrics["intervals"]``)."""
    scores = row_scores(scored)
    return {m: iv for m, s in scores.items() if (iv := interval(list(s.values()))) is not None}


def paired(
    labels: Sequence[str], scored_runs: Sequence[Iterable[Mapping[str, Any]]]
) -> list[dict[str, Any]]:
    """Each run against the one before it (base -> SFT -> GRPO, the order a pipeline
    trains them), metric by metric, on the rows both scored."""
    scores = [row_scores(rows) for rows in scored_runs]
    out = []
    for i in range(1, len(scores)):
        a, b = scores[i - 1], scores[i]
        metrics = {
            m: diff
            for m in ROW_METRICS
            if m in a and m in b and (diff := paired_difference(a[m], b[m]))
        }
        out.append({"a": labels[i - 1], "b": labels[i], "metrics": metrics})
    return out


def _ci(d: Mapping[str, Any], key: str = "mean") -> str:
    sign = "+" if key == "delta" else ""
    return f"{d[key]:{sign}.3f} [{d['low']:{sign}.3f}, {d['high']:{sign}.3f}]"


def section(report: Mapping[str, Any]) -> list[str]:
    """The report's Markdown section: intervals per run, then the paired differences."""
    runs = [r for r in report["runs"] if r["metrics"].get("intervals")]
    if not runs:
        return []
    from medray.eval.report_sections import markdown_table

    metrics = [m for m in ROW_METRICS if any(m in r["metrics"]["intervals"] for r in runs)]
    rows = []
    for m in metrics:
        cells = []
        for r in runs:
            iv = r["metrics"]["intervals"].get(m)
            cells.append(f"{_ci(iv)} (n={iv['n']})" if iv else None)
        rows.append([m, *cells])
    out = [
        "## How sure: 95% bootstrap intervals",
        "",
        f"Percentile bootstrap over rows ({N_RESAMPLES} resamples, seed {SEED}).",
        "",
        markdown_table(["metric", *[r["label"] for r in runs]], rows),
        "",
    ]
    for p in report.get("paired") or ():
        if not p["metrics"]:
            continue
        out += [
            f"Paired differences, **{p['b']}** - **{p['a']}** on the rows both scored (an "
            "interval without 0 is a difference these rows support):",
            "",
            markdown_table(
                ["metric", "n", p["a"], p["b"], "difference [95%]", f"resamples {p['b']} ahead"],
                [
                    [m, d["n"], d["a"], d["b"], _ci(d, "delta"), d["b_ahead_share"]]
                    for m, d in p["metrics"].items()
                ],
            ),
            "",
        ]
    return out
