"""Aggregate several runs' predictions by confidence-weighted majority vote (MEDIQA prior art).

For each ``sample_id`` every run that produced an answer casts one vote for it, weighted
by its ``confidence`` (a run without a confidence votes with weight 0, so it only
decides among equal weights). Answers vote together when they are the same under the
VQA protocol: yes/no answers of closed questions by their yes/no, choice answers by the
option they name, others by their normalised text.

The winner has the largest total weight; ties go to more votes, then to the answer of
the run listed first, so the result never depends on row or file order. The aggregated
row copies the most confident winning vote's row (its text, boxes, reasoning), with
``confidence`` = the winner's share of the total weight (its share of the votes when all
weights are 0) and ``latency_ms`` = the sum over runs (the cost of the ensemble). A
sample no run answered keeps the first run's row (and its ``error``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from medray.eval.mcq import resolve_choice
from medray.eval.predictions import PredictionMismatchError, Predictions, build_table
from medray.eval.vqa import canonical_yes_no, normalize_answer


def vote_key(row: Mapping[str, Any]) -> str | None:
    """What a row votes for (None: it casts no vote)."""
    pred = row.get("pred_answer")
    if row.get("error") or not normalize_answer(pred):
        return None
    if row.get("answer_type") == "closed" and canonical_yes_no(pred):
        return "yn:" + canonical_yes_no(pred)
    if row.get("choices"):
        idx = resolve_choice(pred, row["choices"])
        if idx is not None:
            return f"choice:{idx}"
    return "text:" + normalize_answer(pred)


def weighted_vote(votes: Sequence[tuple[str, float]]) -> tuple[str, float, int] | None:
    """Winner of ``(key, weight)`` votes listed in run order.

    Returns:
        ``(key, share, n_votes)``: share of the total weight (of the votes when every
        weight is 0); None without votes.
    """
    if not votes:
        return None
    tally: dict[str, list[float]] = {}  # key -> [weight, votes, first position]
    for pos, (key, w) in enumerate(votes):
        t = tally.setdefault(key, [0.0, 0, pos])
        t[0] += w
        t[1] += 1
    key = min(tally, key=lambda k: (-tally[k][0], -tally[k][1], tally[k][2]))
    total = sum(t[0] for t in tally.values())
    share = tally[key][0] / total if total > 0 else tally[key][1] / len(votes)
    return key, share, int(tally[key][1])


def aggregate(runs: Sequence[Predictions]) -> tuple[pa.Table, dict[str, Any]]:
    """Confidence-weighted majority vote of ``runs`` (same rows) into one predictions table.

    Returns:
        The aggregated table (contract columns of the first run) and a summary:
        ``runs`` (labels), ``n``, ``unanimous_rate`` (samples whose voters all agree)
        and ``no_vote`` (samples no run answered).

    Raises:
        PredictionMismatchError: fewer than two runs, or runs over different rows.
    """
    if len(runs) < 2:
        raise PredictionMismatchError("aggregation needs at least two prediction runs")
    fps = {r.manifest.dataset_fingerprint for r in runs}
    if len(fps) != 1:
        raise PredictionMismatchError(
            "runs to aggregate were made on different input rows: "
            + ", ".join(f"{r.label}={r.manifest.dataset_fingerprint}" for r in runs)
        )
    by_run = [{row["sample_id"]: row for row in r.rows()} for r in runs]
    columns = runs[0].table.schema.names
    out_rows, unanimous, no_vote = [], 0, 0
    for sid in runs[0].table.column("sample_id").to_pylist():
        rows = [b[sid] for b in by_run]
        keyed = [(vote_key(r), r) for r in rows]
        votes = [(k, r.get("confidence") or 0.0) for k, r in keyed if k is not None]
        result = weighted_vote(votes)
        if result is None:
            no_vote += 1
            merged = dict(rows[0])
            merged["confidence"] = None
        else:
            key, share, _ = result
            unanimous += len({k for k, _ in votes}) == 1
            winners = [r for k, r in keyed if k == key]
            best = max(winners, key=lambda r: r.get("confidence") or 0.0)  # first on ties
            merged = dict(best)
            merged["confidence"] = share
            merged["error"] = ""
        merged["latency_ms"] = float(sum(r["latency_ms"] for r in rows))
        out_rows.append({c: merged.get(c) for c in columns})
    n = len(out_rows)
    summary = {
        "runs": [r.label for r in runs],
        "n": n,
        "unanimous_rate": unanimous / (n - no_vote) if n > no_vote else None,
        "no_vote": no_vote,
    }
    return build_table(out_rows), summary
