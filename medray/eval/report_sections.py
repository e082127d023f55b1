"""The sections of ``report.md`` (breakdowns, thresholds, faithfulness, text tasks,
errors) and the table helpers every Markdown view of a report uses."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from medray.eval.metrics import get_path


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


# ----------------------------------------------------------------------------- sections


def breakdowns(runs: Sequence[Mapping[str, Any]]) -> list[str]:
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


def thresholds(runs: Sequence[Mapping[str, Any]]) -> list[str]:
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


def captions(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Captions against the reference caption, and the consistency score's selective
    accuracy beside the confidence's (the right panel of the risk-coverage plot)."""
    caps = [r["metrics"].get("captions") or {} for r in runs]
    if not any(caps):
        return []

    keys = [
        (("n",), "rows with a reference caption"),
        (("text", "bleu"), "BLEU (corpus)"),
        (("text", "rouge1"), "ROUGE-1"),
        (("text", "rougeL"), "ROUGE-L"),
        (("consistency", "n"), "rows with a consistency score"),
        (("consistency", "mean"), "caption-question consistency (mean cosine)"),
        (("consistency", "calibration", "aurc"), "AURC, answering by consistency"),
    ]
    rows = [[label, *[get_path(c, *path) for c in caps]] for path, label in keys]
    rows.append(
        [
            "AURC, answering by confidence",
            *[get_path(r["metrics"], "calibration", "aurc") for r in runs],
        ]
    )
    return [
        "## Captions",
        "",
        "The caption against the one the contract trains for (modality, organ and what the "
        "row's labels or boxes say is in the image), and caption-question consistency as a "
        "score to answer by (lower AURC: answers ranked by it are right more often).",
        "",
        markdown_table(
            ["", *[r["label"] for r in runs]],
            [r for r in rows if any(v is not None for v in r[1:])],
        ),
        "",
    ]


def faithfulness(runs: Sequence[Mapping[str, Any]]) -> list[str]:
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


def text_and_retrieval(runs: Sequence[Mapping[str, Any]]) -> list[str]:
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
        (
            "mcq",
            "Multiple choice and perplexity (text models)",
            ["n", "accuracy", "answered_rate", "n_perplexity", "perplexity"],
        ),
    ):
        if any(r["metrics"].get(sec) for r in runs):
            rows = [[k, *[(r["metrics"].get(sec) or {}).get(k) for r in runs]] for k in keys]
            out += [f"## {title}", "", markdown_table(["", *[r["label"] for r in runs]], rows), ""]
    out += _mcq_confusion(runs)
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


def _mcq_confusion(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    """One table per run: reference option (rows) by predicted option (columns)."""
    out = []
    for r in runs:
        conf = (r["metrics"].get("mcq") or {}).get("confusion")
        if not conf:
            continue
        cols = sorted(
            {k for v in conf.values() for k in v} | set(conf), key=lambda k: (k == "none", k)
        )
        out += [
            f"*{r['label']}: reference option (rows) by the predicted one (columns)*",
            "",
            markdown_table(
                ["", *cols], [[ref, *[conf[ref].get(c, 0) for c in cols]] for ref in conf]
            ),
            "",
        ]
    return out


def errors(runs: Sequence[Mapping[str, Any]]) -> list[str]:
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
