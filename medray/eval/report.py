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

from medray.eval import uncertainty
from medray.eval.metrics import headline
from medray.eval.plots import PLOTS

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
    out = [markdown_table(["", *[r["label"] for r in runs]], rows), ""]
    return out + _flips_by_kind(runs)


def _flips_by_kind(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Flip rates per kind of region of interest (a named lesion or organ, the only box,
    the model's own boxes), each run's ROI / random / gap (rows)."""
    kinds = sorted(
        {k for r in runs for k in ((r["metrics"].get("faithfulness") or {}).get("by_kind") or {})}
    )
    if not kinds:
        return []

    def cell(r: Mapping[str, Any], kind: str) -> str | None:
        f = ((r["metrics"].get("faithfulness") or {}).get("by_kind") or {}).get(kind)
        if not f:
            return None
        return f"{fmt(f['roi_flip_rate'])} / {fmt(f['random_flip_rate'])} / {fmt(f['flip_gap'])} ({f['n_both']})"

    return [
        "Per kind of region (flip rate with the region inpainted / with a random region of "
        "the same size inside the body / gap, and rows):",
        "",
        markdown_table(
            ["region", *[r["label"] for r in runs]],
            [[k, *[cell(r, k) for r in runs]] for k in kinds],
        ),
        "",
    ]


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
