"""The reasoner's training format: chat prompt for a row, JSON target for a row.

One place for what the reasoner sees and what it must write, shared by SFT
(``jobs/train_sft.py``), GRPO (``jobs/train_grpo.py``) and evaluation. The prompt is the
serving prompt (:meth:`medray.serving.reasoner.Reasoner.messages_for`), so an adapter
trained here answers the same way behind the Serve app.

Stable interface (other modules import these; keep the signatures):

* ``build_messages(row, with_answer: bool) -> list[dict]``: chat messages for a row of the
  unified schema (``medray/data/schema.py``): the system prompt, then the user turn with
  one ``{"type": "image"}`` placeholder (when the row has an image) and the question; with
  ``with_answer`` the assistant turn holding :func:`build_target` is appended. Feed the
  result to ``processor.apply_chat_template(..., add_generation_prompt=not with_answer)``
  with the image from :func:`row_image`.
* ``build_target(row) -> str``: the reference answer as one JSON object
  ``{"caption": str, "reasoning": [str], "boxes": [[x1, y1, x2, y2]], "answer": str}``
  (compact separators, boxes in [0, 1] rounded to :data:`BOX_DECIMALS` places), which
  :func:`medray.structured.parse_answer` parses with ``ok`` and no repairs.
* ``target_dict(row) -> dict``: the same object before serialisation.
* ``row_image(row, blank=False) -> PIL.Image.Image | None``: the row's image as RGB; with
  ``blank`` a black image of the same size (the blank-image control), None without one.
* ``sft_example(row, blank=False) -> dict``: a trl prompt-completion example
  (``prompt``, ``completion`` as chat messages, ``images`` as a list of PIL images).

How the target is built from the row (only the row's own fields, nothing invented):

* ``caption``: modality and organ (``"X-ray image of the chest."``; ``"Medical image."``
  when neither is known);
* ``reasoning``: the findings text split into sentences (at most
  :data:`MAX_FINDING_STEPS`), else the row's positive ``labels``, else the labels of its
  boxes (SLAKE's organs and lesions: what the image shows, written before the answer is),
  then one step naming the question's category and stating the answer;
* ``boxes``: the row's reference boxes;
* ``answer``: the reference answer, unchanged.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

__all__ = [
    "BOX_DECIMALS",
    "MAX_FINDING_STEPS",
    "build_messages",
    "build_target",
    "row_image",
    "sft_example",
    "target_dict",
]

BOX_DECIMALS = 3
MAX_FINDING_STEPS = 3

_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _seq(value: Any) -> list[Any]:
    """A list field as a list (None -> []; Ray Data may hand back a numpy array)."""
    return [] if value is None else list(value)


def _has_image(row: Mapping[str, Any]) -> bool:
    return row.get("image") is not None


def build_messages(row: Mapping[str, Any], with_answer: bool) -> list[dict[str, Any]]:
    """Chat messages for ``row``: system + user (image placeholder, question) [+ assistant].

    Args:
        row: a unified-schema row (``question`` and, for an image placeholder, ``image``).
        with_answer: append the assistant turn with :func:`build_target` (for SFT).

    Raises:
        ValueError: the row has no question.
    """
    from medray.serving.reasoner import Reasoner

    question = row.get("question")
    if not question:
        raise ValueError(f"row {row.get('sample_id')!r} has no question to prompt with")
    messages = Reasoner.messages_for(question, _has_image(row))
    if with_answer:
        messages.append(
            {"role": "assistant", "content": [{"type": "text", "text": build_target(row)}]}
        )
    return messages


def _caption(row: Mapping[str, Any]) -> str:
    modality = (row.get("modality") or "").strip()
    organ = (row.get("organ") or "").strip()
    mod = {"x-ray": "X-ray", "ct": "CT", "mri": "MRI"}.get(modality.lower(), modality)
    if mod and organ:
        return f"{mod} image of the {organ.lower()}."
    if mod:
        return f"{mod} image."
    if organ:
        return f"Medical image of the {organ.lower()}."
    return "Medical image."


def _box_labels(row: Mapping[str, Any]) -> list[str]:
    """The row's box labels, each once, in box order (SLAKE: organs and lesions)."""
    labels: list[str] = []
    for b in _seq(row.get("boxes")):
        label = " ".join(str(b.get("label") or "").split())
        if label and label not in labels:
            labels.append(label)
    return labels


def _reasoning(row: Mapping[str, Any]) -> list[str]:
    steps: list[str] = []
    findings = " ".join((row.get("findings") or "").split())
    if findings:
        steps.extend(s for s in _SENTENCE.split(findings)[:MAX_FINDING_STEPS] if s)
    elif _seq(row.get("labels")):
        steps.append("Labelled findings: " + ", ".join(_seq(row["labels"])) + ".")
    elif marked := _box_labels(row):
        steps.append("Marked regions: " + ", ".join(marked) + ".")
    topic = (row.get("content_type") or "").strip().lower()
    answer = str(row.get("answer") or "").strip()
    about = f"The {topic} question" if topic else "The question"
    steps.append(f"{about} is answered from the image: {answer}.")
    return steps


def _boxes(row: Mapping[str, Any]) -> list[list[float]]:
    out = []
    for b in _seq(row.get("boxes")):
        out.append([round(float(b[k]), BOX_DECIMALS) for k in ("x1", "y1", "x2", "y2")])
    return out


def target_dict(row: Mapping[str, Any]) -> dict[str, Any]:
    """The reference structured answer for ``row`` (see the module docstring).

    Raises:
        ValueError: the row has no answer.
    """
    answer = row.get("answer")
    if answer is None or not str(answer).strip():
        raise ValueError(f"row {row.get('sample_id')!r} has no answer to train on")
    return {
        "caption": _caption(row),
        "reasoning": _reasoning(row),
        "boxes": _boxes(row),
        "answer": str(answer).strip(),
    }


def build_target(row: Mapping[str, Any]) -> str:
    """The reference structured answer for ``row`` as one compact JSON object string."""
    return json.dumps(target_dict(row), ensure_ascii=False, separators=(", ", ": "))


def row_image(row: Mapping[str, Any], blank: bool = False) -> Image.Image | None:
    """The row's image decoded to RGB; a black image of the same size with ``blank``."""
    data = row.get("image")
    if data is None:
        return None
    img = Image.open(io.BytesIO(data))
    img.load()
    if blank:
        return Image.new("RGB", img.size, (0, 0, 0))
    return img.convert("RGB")


def sft_example(row: Mapping[str, Any], blank: bool = False) -> dict[str, Any]:
    """A trl conversational prompt-completion example with its image list."""
    messages = build_messages(row, with_answer=True)
    image = row_image(row, blank=blank)
    return {
        "prompt": messages[:-1],
        "completion": messages[-1:],
        "images": [image] if image is not None else [],
    }
