"""What the web UI shows, built from ``/v1/analyze`` events: pure functions, no Gradio.

Boxes come in the reasoner contract's form, ``[x1, y1, x2, y2]`` normalised to [0, 1]
(:mod:`medray.contracts.reasoner`), and are drawn on a copy of the image.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from PIL import Image, ImageDraw

BOX_COLOURS = ("#ff3b30", "#34c759", "#007aff", "#ffcc00", "#af52de", "#ff9500")
STEP_NAMES = {"caption": "Caption", "reasoning": "Step", "answer": "Answer"}


def valid_boxes(boxes: Any) -> list[list[float]]:
    """The well-formed boxes (four numbers, x1 < x2, y1 < y2), clipped to [0, 1]."""
    out = []
    for b in boxes if isinstance(boxes, list) else []:
        if not (isinstance(b, list) and len(b) == 4):
            continue
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in b):
            continue
        x1, y1, x2, y2 = (min(max(float(v), 0.0), 1.0) for v in b)
        if x2 > x1 and y2 > y1:
            out.append([x1, y1, x2, y2])
    return out


def draw_boxes(image: Image.Image, boxes: Sequence[Sequence[float]], labels: Sequence[str]):
    """A copy of ``image`` (RGB) with each normalised box outlined and labelled."""
    out = image.convert("RGB")
    draw = ImageDraw.Draw(out)
    w, h = out.size
    width = max(2, round(min(w, h) / 128))
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        colour = BOX_COLOURS[i % len(BOX_COLOURS)]
        rect = (x1 * (w - 1), y1 * (h - 1), x2 * (w - 1), y2 * (h - 1))
        draw.rectangle(rect, outline=colour, width=width)
        label = labels[i] if i < len(labels) else str(i + 1)
        left, top, right, bottom = draw.textbbox((rect[0], rect[1]), label)
        ty = rect[1] - (bottom - top) - 4 if rect[1] > (bottom - top) + 4 else rect[1] + width
        draw.rectangle(
            (rect[0], ty, rect[0] + right - left + 4, ty + bottom - top + 4), fill=colour
        )
        draw.text((rect[0] + 2, ty + 2 - (top - rect[1])), label, fill="black")
    return out


def box_labels(parsed: Mapping[str, Any] | None, n: int) -> list[str]:
    """``"1"``, ``"2"``, ... each with the answer the boxes support, shortened."""
    answer = " ".join(str((parsed or {}).get("answer") or "").split())
    answer = answer if len(answer) <= 24 else answer[:23] + "…"
    return [f"{i + 1}: {answer}" if answer else str(i + 1) for i in range(n)]


def steps_markdown(steps: Sequence[Mapping[str, Any]], done: bool) -> str:
    """The reasoning steps seen so far, one per line, in the order they streamed."""
    lines = []
    for s in steps:
        name = STEP_NAMES.get(str(s.get("kind")), str(s.get("kind", "")).title())
        if s.get("kind") == "reasoning" and s.get("index") is not None:
            name = f"Step {int(s['index']) + 1}"
        lines.append(f"- **{name}:** {s.get('text', '')}")
    if not done:
        lines.append("- *…*")
    return "\n".join(lines) if lines else "*waiting for the first step…*"


def case_anchor(case_id: Any) -> str:
    """The HTML id of a similar case's card (a citation of the case links to it)."""
    return "medray-case-" + "".join(
        ch if ch.isalnum() or ch in "-_" else "_" for ch in str(case_id)
    )


def citations_html(
    citations: Sequence[Mapping[str, Any]],
    passages: Mapping[str, str] | None = None,
    shown_cases: Sequence[str] = (),
) -> str:
    """Numbered citations, each a ``<details>`` that opens on its source: the cited
    knowledge passage (its full text when the stream's ``knowledge`` event carried it,
    else the agent's snippet) or the similar case's report, with a link to the case's card
    in the gallery when it is shown there."""
    if not citations:
        return '<div class="medray-cites-empty">No citations.</div>'
    passages = passages or {}
    items = []
    for i, c in enumerate(citations, 1):
        cid = str(c.get("id") or "")
        kind = str(c.get("kind") or "")
        title = str(c.get("title") or cid)
        text = passages.get(cid) if kind == "knowledge" else None
        text = " ".join(str(text or c.get("snippet") or "(no text)").split())
        extra = ""
        if kind == "case" and cid in shown_cases:
            extra = f' <a href="#{case_anchor(cid)}">(show the case)</a>'
        source = str(c.get("source") or "")
        if source.startswith(("http://", "https://")):
            extra += f' <a href="{html.escape(source)}" target="_blank" rel="noopener">(source)</a>'
        elif source:
            extra += f" <small>source: {html.escape(source)}</small>"
        items.append(
            f'<details class="medray-cite" id="medray-cite-{i}">'
            f"<summary>[{i}] <b>{html.escape(str(c.get('label', '')))}</b> "
            f"{html.escape(kind)}: {html.escape(title)}</summary>"
            f'<div class="medray-cite-source"><small>id {html.escape(cid)}</small>{extra}'
            f"<p>{html.escape(text)}</p></div></details>"
        )
    return '<div class="medray-cites">' + "".join(items) + "</div>"


def answer_markdown(answer: Mapping[str, Any]) -> str:
    """The agent's answer: diagnosis, findings, differential, next steps (the citations
    are :func:`citations_html`)."""
    parts = []
    if answer.get("most_likely_diagnosis"):
        parts.append(f"**Most likely:** {answer['most_likely_diagnosis']}")
    if answer.get("severity"):
        parts.append(f"**Severity:** {answer['severity']}")
    if answer.get("confidence") is not None:
        parts.append(f"**Confidence:** {answer['confidence']}")
    for key, title in (
        ("findings", "Findings"),
        ("differential", "Differential"),
        ("next_steps", "Next steps"),
        ("missing", "Missing"),
    ):
        items = answer.get(key) or []
        if items:
            parts.append(f"**{title}:**\n" + "\n".join(f"- {x}" for x in items))
    n = len(answer.get("citations") or [])
    parts.append(f"**Citations:** {n} (numbered below; open one to read its source)")
    return "\n\n".join(parts)


def safety_markdown(report: Mapping[str, Any]) -> str:
    """The safety report: risk level, refusal, warnings, notices, disclaimer."""
    parts = [f"**Risk level:** {report.get('risk_level', 'unknown')}"]
    if report.get("refused"):
        parts.append(f"**Refused:** {report.get('refusal') or 'yes'}")
    for key, title in (("warnings", "Warnings"), ("notices", "Notices")):
        if report.get(key):
            parts.append(f"**{title}:**\n" + "\n".join(f"- {x}" for x in report[key]))
    if report.get("disclaimer"):
        parts.append(f"*{report['disclaimer']}*")
    return "\n\n".join(parts)


def cases_html(cases: Mapping[str, Any]) -> str:
    """The similar cases as a gallery of cards: score, labels, modality/organ, report.

    The case index stores reports and labels, not images, so the cards carry no pixels.
    """
    hits = cases.get("hits") or []
    if not hits:
        why = cases.get("error") or "no similar cases found"
        return f'<div class="medray-cases-empty">{html.escape(str(why))}</div>'
    cards = []
    for h in hits:
        labels = ", ".join(map(str, h.get("labels") or [])) or "no labels"
        where = " · ".join(str(h[k]) for k in ("modality", "organ", "split") if h.get(k))
        cards.append(
            f'<div class="medray-case" id="{case_anchor(h.get("id", ""))}">'
            f"<b>{html.escape(str(h.get('id', '')))}</b> "
            f"<small>score {float(h.get('score', 0.0)):.3f}</small><br>"
            f"<i>{html.escape(labels)}</i><br><small>{html.escape(where)}</small>"
            f"<p>{html.escape(str(h.get('report', ''))[:400])}</p></div>"
        )
    return '<div class="medray-cases">' + "".join(cards) + "</div>"


CSS = """
.medray-cases {display: flex; flex-wrap: wrap; gap: 8px;}
.medray-case {border: 1px solid #8884; border-radius: 6px; padding: 6px; width: 220px;}
.medray-case p {margin: 4px 0 0 0; font-size: 0.85em;}
.medray-cite {border-left: 3px solid #007aff; margin: 4px 0; padding: 2px 8px;}
.medray-cite summary {cursor: pointer;}
.medray-cite p {margin: 4px 0; font-size: 0.9em;}
"""
