"""The demo's figures: what the pipeline's summary shows a new user, each with the target it
must meet (printed beside it), from ``medray demo`` and the docs' demo runs."""

from __future__ import annotations

from typing import Any

# What the demo's figures must show (issue 17): checked and printed beside each figure.
MIN_JSON_VALIDITY = 0.9
MIN_CLIP_TEST_IMAGES = 100


def _check(ok: bool | None) -> str:
    return "n/a" if ok is None else ("ok" if ok else "NOT MET")


def figures(summary: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The demo's figures ``(name, value, target met)`` from the pipeline's summary."""
    st = summary["stages"]
    out: list[tuple[str, str, bool | None]] = []
    bi, ev = st.get("batch_infer"), st.get("evaluate")
    if bi:
        for label, m in bi["models"].items():
            if label == "base":
                continue
            v = m["json_valid"]
            out.append(
                (
                    f"reasoner {label}: JSON validity on {bi['input_rows']} held-out rows",
                    f"{v:.3f} (target >= {MIN_JSON_VALIDITY})",
                    v >= MIN_JSON_VALIDITY,
                )
            )
    if ev:
        for label, h in ev["runs"].items():
            iv = (ev.get("intervals") or {}).get(label, {}).get("closed accuracy")
            ci = f" [{iv['low']:.3f}, {iv['high']:.3f}]" if iv else ""
            out.append(
                (
                    f"reasoner {label}: closed accuracy [95% bootstrap] | blank-image accuracy "
                    "(rows with a blank-image answer, open and closed)",
                    f"{_num(h.get('closed accuracy'))}{ci} | {_num(h.get('blank-image accuracy'))}",
                    None,
                )
            )
            if h.get("caption ROUGE-L") is not None:
                out.append(
                    (
                        f"reasoner {label}: caption ROUGE-L | AURC answering by confidence | "
                        "by caption-question consistency",
                        f"{_num(h.get('caption ROUGE-L'))} | {_num(h.get('AURC'))} | "
                        f"{_num(h.get('AURC (consistency)'))}",
                        None,
                    )
                )
        for pair in ev.get("paired") or ():
            d = pair["metrics"].get("closed accuracy")
            if d:
                out.append(
                    (
                        f"reasoner {pair['b']} - {pair['a']}: closed accuracy, paired over "
                        f"{d['n']} rows [95%]",
                        f"{d['delta']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]",
                        None,  # reported: whether the rows support a difference
                    )
                )
        out.append((f"report plots ({ev['report']})", str(len(ev["plots"])), bool(ev["plots"])))
        out += _text_figures(ev)
    clip = st.get("train_clip")
    if clip:
        zs, ft = clip["zero_shot"]["i2t_R@1"], clip["fine_tuned"]["i2t_R@1"]
        n = clip["fine_tuned"]["n_images"]
        out.append(
            (
                f"CLIP test image->text R@1 on {n} images: zero-shot -> fine-tuned",
                f"{zs:.3f} -> {ft:.3f}",
                ft > zs and n >= MIN_CLIP_TEST_IMAGES,
            )
        )
    summ = (st.get("summariser_sft") or {}).get("eval") or {}
    if summ:
        r, c = summ.get("rougeL"), summ.get("copy_input_rougeL")
        out.append(
            (
                f"summariser held-out ROUGE-L on {summ.get('n')} reports | copy-the-input",
                f"{_num(r)} | {_num(c)}",
                None if r is None or c is None else r > c,
            )
        )
    qa = (st.get("medqa_sft") or {}).get("eval") or {}
    if qa:
        acc, major = qa.get("accuracy"), qa.get("majority_rate")
        out.append(
            (
                f"medical QA held-out MCQ accuracy on {qa.get('n')} questions | majority answer",
                f"{_num(acc)} | {_num(major)}",
                None,  # reported, not a bar: a tiny model on a few hundred rows
            )
        )
    a = summary.get("analyze")
    if a:
        out.append(
            (
                f"analyze answer by {a['model']!r}: reasoning.ok",
                str(a["reasoning_ok"]),
                a["reasoning_ok"],
            )
        )
    return out


def _num(v: Any) -> str:
    return "-" if v is None else f"{v:.3f}"


def _text_figures(ev: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """The text models' batch-inference figures (the evaluate stage's text reports)."""
    out: list[tuple[str, str, bool | None]] = []
    for task, runs in (ev.get("text_runs") or {}).items():
        for label, h in runs.items():
            if task == "medqa":
                name, value = "MCQ accuracy", _num(h.get("MCQ accuracy"))
            else:
                name = "ROUGE-L | BLEU"
                value = f"{_num(h.get('ROUGE-L'))} | {_num(h.get('BLEU'))}"
            out.append(
                (
                    f"{task} {label} batch inference on {h.get('rows')} held-out rows: {name} "
                    f"| perplexity ({ev['text_reports'][task]})",
                    f"{value} | {_num(h.get('perplexity'))}",
                    h.get("perplexity") is not None,  # the log-likelihoods reached the report
                )
            )
    return out
