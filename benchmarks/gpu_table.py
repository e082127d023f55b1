"""Reading ``benchmarks/gpu_models.py`` runs: before/after ratios (``--compare``) and
Markdown tables for the README (``--table``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from benchmarks.gpu_parts import Emitter


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def _md(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def table(path: str) -> str:
    """The run's reasoner rows with their decode limits, then the other rows, as Markdown."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    out: list[str] = []
    reasoner = [r for r in rows if r["bench"] == "reasoner"]
    out.append(
        _md(
            [
                "path",
                "variant",
                "B",
                "TTFT ms",
                "e2e ms",
                "decode ms/step",
                "tok/s per seq",
                "tok/s total",
                "decode tok/s total",
                "decode limit tok/s (this B)",
                "decode / limit",
                "peak GiB",
            ],
            [
                [
                    r["path"],
                    r["variant"],
                    str(r["batch"]),
                    _f(r.get("ttft_ms")),
                    _f(r.get("e2e_ms")),
                    _f(r.get("decode_ms_per_step"), 2),
                    _f(r.get("tok_s_per_seq")),
                    _f(r.get("tok_s_total")),
                    _f(r.get("decode_tok_s_total")),
                    _f(r.get("limit_tok_s_total_this_batch"), 0),
                    _f(r.get("decode_frac_of_limit"), 3),
                    _f(r.get("peak_gib"), 2),
                ]
                for r in reasoner
            ],
        )
    )
    for r in rows:
        if r["bench"] in (
            "device",
            "model",
            "plan",
            "processor",
            "reasoner_latency",
            "lora_adapter",
            "summariser",
            "clip_images",
            "clip_texts",
            "sft_lora_step",
            "ratios",
            "before_after",
            "error",
        ):
            fields = {k: v for k, v in r.items() if k not in ("bench", "label")}
            text = ", ".join(f"{k} {_f(v, 3)}" for k, v in fields.items())
            out.append(f"- **{r['bench']}** ({r['label']}): {text}")
    return "\n".join(out)


def compare(before: str, after: str) -> None:
    """Ratio rows (after / before) for the rows two runs share."""

    def load(path: str) -> dict[tuple, dict]:
        rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
        keyed = {}
        for r in rows:
            if r["bench"] in ("reasoner", "processor"):
                keyed[(r["bench"], r.get("path"), r.get("variant"), r["batch"])] = r
        return keyed

    a, b = load(before), load(after)
    emit = Emitter(None, "compare")
    for key in sorted(set(a) & set(b), key=str):
        fields = {}
        for f in ("ttft_ms", "e2e_ms", "decode_ms_per_step", "peak_gib", "host_ms", "device_ms"):
            if a[key].get(f) and b[key].get(f):
                fields[f"{f}_after_over_before"] = b[key][f] / a[key][f]
        emit("before_after", key="/".join(str(k) for k in key), **fields)
