"""Batch inference's summary: per-model counts, rows and actors per node, and its printout."""

from __future__ import annotations

from collections import Counter
from typing import Any


def summarize(preds, n_inputs: int, seconds: float) -> dict[str, Any]:
    """Per-model counts and rows per node, from the small columns of the predictions
    (a materialized Ray Dataset of every model's rows)."""
    df = preds.select_columns(
        ["model_label", "node", "actor", "error", "parse_ok", "latency_ms"]
    ).to_pandas()
    per_model = {}
    for label, g in df.groupby("model_label", sort=False):
        errors = g[g["error"] != ""]
        per_model[label] = {
            "rows": len(g),
            "inferred": int((g["error"] == "").sum()),
            "errors": len(errors),
            "json_valid": round(float(g["parse_ok"].mean()), 4),
            "mean_latency_ms": round(
                float(g.loc[g["error"] == "", "latency_ms"].fillna(0).mean()), 2
            )
            if (g["error"] == "").any()
            else None,
        }
    rows_per_node = dict(Counter(df["node"]))
    actors_per_node = dict(Counter(df.drop_duplicates("actor")["node"]))
    return {
        "input_rows": n_inputs,
        "prediction_rows": len(df),
        "seconds": round(seconds, 2),
        "rows_per_s": round(len(df) / seconds, 3) if seconds else None,
        "models": per_model,
        "rows_per_node": rows_per_node,
        "actors_per_node": actors_per_node,  # actors that inferred rows
        "error_examples": df.loc[df["error"] != "", "error"].head(5).tolist(),
    }


def print_summary(s: dict[str, Any]) -> None:
    """The job's printout of :func:`summarize` plus the run's paths."""
    print("\n=== MedRay batch inference ===")
    print(
        f"{s['dataset']} [{s['split']}]: {s['input_rows']} rows x {len(s['models'])} model(s) "
        f"in {s['seconds']} s ({s['rows_per_s']} rows/s)"
    )
    for label, m in s["models"].items():
        print(
            f"  {label}: {m['inferred']} inferred, {m['errors']} errors, "
            f"{'JSON valid' if s['task'] == 'reasoner' else 'parsed'} {m['json_valid']:.2f}, {m['mean_latency_ms']} ms/row  -> {s['predictions'][label]}"
        )
    for what in ("rows", "actors"):
        per_node = sorted(s[f"{what}_per_node"].items())
        print(f"  {what} per node: " + ", ".join(f"{k}: {v}" for k, v in per_node))
    if s.get("report"):
        print(f"REPORT: {s['report']}")
    print(f"SUMMARY: {s['output_dir']}/summary.json")
