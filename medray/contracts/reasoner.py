"""The reasoner's contract: prompt, target, parsers, generation settings, confidence.

THE one home of what the vision-language reasoner is shown and what it must write. SFT
(``jobs/train_sft.py``), GRPO and its rewards (``jobs/train_grpo.py``), batch inference
(``jobs/batch_infer.py``), the evaluation job, the Serve reasoner and the agent import it;
none of them builds a reasoner prompt or parses an answer any other way.

* Prompt: :data:`SYSTEM_PROMPT` as the system turn (:data:`TEXT_SYSTEM_PROMPT` for a
  text-only chat), then one user turn holding one
  ``{"type": "image"}`` placeholder *before* the question text when there is an image
  (:func:`messages`); an empty question becomes :data:`DEFAULT_QUESTION`.
  :func:`build_messages` is the same for a unified-schema row (``medray/data/schema.py``),
  optionally with the assistant's target turn appended (SFT).
* Target: one compact JSON object ``{"caption", "reasoning", "boxes", "answer"}``
  (:func:`target_dict` / :func:`build_target`), built only from the row's own fields:
  ``caption`` what the image is and what is in it (:func:`caption_for`: modality, organ
  and the row's labels or box labels); ``reasoning`` the findings' first
  :data:`MAX_FINDING_STEPS` sentences, else the positive ``labels``, else the labels of
  its boxes, then one step naming the question's category and stating the answer;
  ``boxes`` the *evidence* boxes, the reference boxes the question, answer or labels name
  (or the only box): the same region choice as the counterfactual reward and flip rates
  (:func:`medray.contracts.counterfactual.roi_boxes`, ``source="reference"``), rounded to
  :data:`BOX_DECIMALS`; ``answer`` unchanged. Every target then fits :data:`MAX_NEW_TOKENS`
  (listing every SLAKE organ box made half of them longer: median 113, max 245 tokens of
  the tiny tokenizer, which spends a token per digit; evidence boxes: median 76, max 119).
* Output formats (:data:`OUTPUT_FORMATS`, the reasoning-format ablation): the full
  object (:data:`DEFAULT_FORMAT`, every path's), ``reasoning_answer`` (no caption) or
  ``answer`` (boxes and answer only); the prompt (:func:`system_prompt`), the target and
  the parser's required keys (:func:`parse`) follow the format a model was trained on.
* Parsers: :func:`parse_answer` (lenient, repairs listed) and :class:`StepStreamer`
  (step events from a growing token stream); both are implemented in
  :mod:`medray.structured` and reached through this module.
* Generation: :data:`GENERATION` (greedy, :data:`MAX_NEW_TOKENS` tokens) is the default
  of every path; a caller may only change the length or ask for sampling explicitly.
* Confidence: :func:`answer_confidence`, the probability of the tokens spelling the
  ``answer`` value.

Images: :func:`row_image` decodes a row's image (RGB) or its blank-image control.
Counterfactual images: :mod:`medray.contracts.counterfactual`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

from PIL import Image

from medray.contracts.counterfactual import roi_boxes
from medray.models.generate import Generated, GenerationParams, token_offsets
from medray.step_stream import StepStreamer
from medray.structured import ParseResult, parse_answer

__all__ = [
    "BOX_DECIMALS",
    "DEFAULT_FORMAT",
    "DEFAULT_QUESTION",
    "GENERATION",
    "MAX_FINDING_STEPS",
    "MAX_NEW_TOKENS",
    "OUTPUT_FORMATS",
    "SYSTEM_PROMPT",
    "TEXT_SYSTEM_PROMPT",
    "ParseResult",
    "StepStreamer",
    "answer_confidence",
    "answer_span",
    "build_messages",
    "build_target",
    "caption_for",
    "check_format",
    "messages",
    "parse",
    "parse_answer",
    "row_image",
    "sft_example",
    "system_prompt",
    "target_dict",
]

# Output formats (the reasoning-format ablation of prior art 004: answer directly, think
# then answer, caption then reason then answer): the keys of the JSON object, in order.
# Every path uses the full format unless a model was trained on another (SFT's
# ``output_format``, recorded with the final model and read back by batch inference).
OUTPUT_FORMATS: dict[str, tuple[str, ...]] = {
    "answer": ("boxes", "answer"),
    "reasoning_answer": ("reasoning", "boxes", "answer"),
    "caption_reasoning_answer": ("caption", "reasoning", "boxes", "answer"),
}
DEFAULT_FORMAT = "caption_reasoning_answer"
_KEY_TYPES = {
    "caption": '"caption": str',
    "reasoning": '"reasoning": [str, ...]',
    "boxes": '"boxes": [[x1, y1, x2, y2], ...]',
    "answer": '"answer": str',
}


def check_format(fmt: str) -> tuple[str, ...]:
    """The keys of output format ``fmt``.

    Raises:
        ValueError: an unknown format (the message lists the known ones).
    """
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; one of {sorted(OUTPUT_FORMATS)}")
    return OUTPUT_FORMATS[fmt]


def system_prompt(fmt: str = DEFAULT_FORMAT) -> str:
    """The system turn of output format ``fmt``: the JSON object the model must write."""
    keys = ", ".join(_KEY_TYPES[k] for k in check_format(fmt))
    return (
        "You are a careful medical imaging assistant for research use. Answer with one JSON "
        f"object: {{{keys}}}, boxes normalised to [0, 1]."
    )


SYSTEM_PROMPT = system_prompt()
# A text-only conversation with the reasoner (OpenAI chat without an image).
TEXT_SYSTEM_PROMPT = (
    "You are a careful medical question-answering assistant for research use. Answer "
    "concisely and say when a clinician must be consulted."
)
DEFAULT_QUESTION = "Describe the image."
MAX_NEW_TOKENS = 128
GENERATION = GenerationParams(max_new_tokens=MAX_NEW_TOKENS)

BOX_DECIMALS = 2  # 0.01 of the side: about 1 pixel at the tiny presets' 112 px
MAX_FINDING_STEPS = 3
MAX_CAPTION_ITEMS = 4  # labels a reference caption names

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
# The value of the (last) "answer" key: a JSON string, or a bare scalar.
_ANSWER_KEY = re.compile(r'"(?:final_)?answer"\s*:\s*')


# ---------------------------------------------------------------------- prompt


def messages(
    question: str | None, has_image: bool, fmt: str = DEFAULT_FORMAT
) -> list[dict[str, Any]]:
    """Chat messages for one question: system prompt (of output format ``fmt``), user turn
    (image placeholder first)."""
    content: list[dict[str, Any]] = [{"type": "image"}] if has_image else []
    text = question if (question or "").strip() else DEFAULT_QUESTION
    content.append({"type": "text", "text": text})
    return [
        {"role": "system", "content": [{"type": "text", "text": system_prompt(fmt)}]},
        {"role": "user", "content": content},
    ]


def _seq(value: Any) -> list[Any]:
    """A list field as a list (None -> []; Ray Data may hand back a numpy array)."""
    return [] if value is None else list(value)


def build_messages(
    row: Mapping[str, Any], with_answer: bool, fmt: str = DEFAULT_FORMAT
) -> list[dict[str, Any]]:
    """Chat messages for a unified-schema row [+ the assistant's target turn].

    Raises:
        ValueError: the row has no question.
    """
    question = row.get("question")
    if not question:
        raise ValueError(f"row {row.get('sample_id')!r} has no question to prompt with")
    out = messages(question, row.get("image") is not None, fmt)
    if with_answer:
        target = build_target(row, fmt)
        out.append({"role": "assistant", "content": [{"type": "text", "text": target}]})
    return out


def parse(
    text: str, image_size: tuple[int, int] | None = None, fmt: str = DEFAULT_FORMAT
) -> ParseResult:
    """:func:`parse_answer` with the required keys of output format ``fmt``."""
    keys = check_format(fmt)
    return parse_answer(text, image_size, required=[k for k in keys if k != "boxes"])


# ---------------------------------------------------------------------- target


def caption_for(row: Mapping[str, Any]) -> str:
    """The reference caption of ``row``: what the image is and what is in it.

    ``"<modality> image of the <organ>"``, then ``" showing <a>, <b>."`` with the row's own
    description of the image's content: its positive labels (MIMIC-CXR, ``No Finding``
    left out), else its boxes' labels (SLAKE organs and lesions), at most
    :data:`MAX_CAPTION_ITEMS`, in the row's order. Never the question or the answer.
    """
    modality = (row.get("modality") or "").strip()
    organ = (row.get("organ") or "").strip()
    mod = {"x-ray": "X-ray", "ct": "CT", "mri": "MRI"}.get(modality.lower(), modality)
    if mod and organ:
        base = f"{mod} image of the {organ.lower()}"
    elif mod:
        base = f"{mod} image"
    elif organ:
        base = f"Medical image of the {organ.lower()}"
    else:
        base = "Medical image"
    seen = [
        " ".join(str(x).split()).lower()
        for x in _seq(row.get("labels"))
        if str(x).strip() and str(x).strip().lower() != "no finding"
    ] or [x.lower() for x in _box_labels(row)]
    seen = list(dict.fromkeys(seen))[:MAX_CAPTION_ITEMS]
    return f"{base} showing {', '.join(seen)}." if seen else f"{base}."


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


def target_dict(row: Mapping[str, Any], fmt: str = DEFAULT_FORMAT) -> dict[str, Any]:
    """The reference structured answer for ``row`` (see the module docstring), with the
    keys of output format ``fmt``.

    Raises:
        ValueError: the row has no answer, or an unknown format.
    """
    keys = check_format(fmt)
    answer = row.get("answer")
    if answer is None or not str(answer).strip():
        raise ValueError(f"row {row.get('sample_id')!r} has no answer to train on")
    boxes = [[round(v, BOX_DECIMALS) for v in b] for b in roi_boxes(row, source="reference")]
    full = {
        "caption": caption_for(row),
        "reasoning": _reasoning(row),
        "boxes": boxes,
        "answer": str(answer).strip(),
    }
    return {k: full[k] for k in keys}


def build_target(row: Mapping[str, Any], fmt: str = DEFAULT_FORMAT) -> str:
    """The reference structured answer for ``row`` as one compact JSON object string."""
    return json.dumps(target_dict(row, fmt), ensure_ascii=False, separators=(", ", ": "))


# ---------------------------------------------------------------------- images


def blank_like(image: Image.Image) -> Image.Image:
    """The blank-image control: a black image of the same size."""
    return Image.new("RGB", image.size, (0, 0, 0))


def row_image(row: Mapping[str, Any], blank: bool = False) -> Image.Image | None:
    """The row's image decoded to RGB (:func:`medray.imaging.decode_image`); its
    :func:`blank_like` control with ``blank``; None for a row without an image."""
    from medray.imaging import decode_image

    data = row.get("image")
    if data is None:
        return None
    img = data.convert("RGB") if isinstance(data, Image.Image) else decode_image(bytes(data))
    return blank_like(img) if blank else img


def sft_example(
    row: Mapping[str, Any], blank: bool = False, fmt: str = DEFAULT_FORMAT
) -> dict[str, Any]:
    """A trl conversational prompt-completion example with its image list."""
    msgs = build_messages(row, with_answer=True, fmt=fmt)
    image = row_image(row, blank=blank)
    return {
        "prompt": msgs[:-1],
        "completion": msgs[-1:],
        "images": [image] if image is not None else [],
    }


# ---------------------------------------------------------------------- confidence


def answer_span(text: str) -> tuple[int, int] | None:
    """Character span ``[start, end)`` of the answer value in ``text``, or None.

    The last ``"answer": ...`` wins (a model may restate it). A string value spans its
    characters between the quotes (an unterminated string runs to the end of the text);
    a bare value (number, true) runs to the next ``,`` ``}`` or newline.
    """
    matches = list(_ANSWER_KEY.finditer(text))
    if not matches:
        return None
    start = matches[-1].end()
    if start < len(text) and text[start] == '"':
        i, start = start + 1, start + 1
        while i < len(text):
            if text[i] == "\\":
                i += 2
                continue
            if text[i] == '"':
                break
            i += 1
        end = min(i, len(text))
    else:
        m = re.match(r"[^,}\n]*", text[start:])
        end = start + (len(m.group(0).rstrip()) if m else 0)
    return (start, end) if end > start else None


def answer_confidence(gen: Generated, tokenizer) -> float | None:
    """Probability of the answer value: exp(sum of its tokens' log-probs), in [0, 1].

    None when the text has no answer value or the generation carries no scores. A token
    counts when its characters overlap the answer's span (the closing quote alone does not).
    """
    span = answer_span(gen.text)
    if span is None or not gen.token_ids or len(gen.logprobs) != len(gen.token_ids):
        return None
    a, b = span
    ends = token_offsets(tokenizer, gen.token_ids)
    total, used, begin = 0.0, 0, 0
    for end, lp in zip(ends, gen.logprobs, strict=True):
        if end > a and begin < b:
            total += lp
            used += 1
        begin = end
    if not used:
        return None
    return min(1.0, max(0.0, math.exp(total)))
