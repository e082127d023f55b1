"""Batched greedy generation with token log-probabilities, and the answer's confidence.

:func:`generate_scored` runs one padded batch through a :class:`medray.serving.reasoner.
Reasoner`'s model (prompt and adapter handling are the reasoner's) and returns, per row,
the generated text with each token's log-probability under the model (raw logits, before
any logits processor). :func:`answer_confidence` turns them into the probability of the
answer: the product of the probabilities of the tokens that spell the value of the
``"answer"`` key in the generated JSON.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from PIL import Image

# The value of the (last) "answer" key: a JSON string, or a bare scalar.
_ANSWER_KEY = re.compile(r'"(?:final_)?answer"\s*:\s*')


@dataclass(frozen=True)
class Generated:
    """One generated answer: text, token ids and their log-probabilities."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # stop | length
    prompt_tokens: int


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


def token_offsets(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """End character offset of each token in the decoded text (prefix decoding, so tokens
    that split a multi-byte character are attributed correctly)."""
    ends, prev = [], 0
    for k in range(len(token_ids)):
        n = len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True))
        prev = max(prev, n)
        ends.append(prev)
    return ends


def answer_confidence(gen: Generated, tokenizer) -> float | None:
    """Probability of the answer value: exp(sum of its tokens' log-probs), in [0, 1].

    None when the text has no answer value. A token counts when its characters overlap
    the answer's span (the closing quote alone does not).
    """
    span = answer_span(gen.text)
    if span is None or not gen.token_ids:
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


@contextlib.contextmanager
def active_model(reasoner, adapter: str | None) -> Iterator[Any]:
    """The reasoner's model with ``adapter`` active (None: the base, adapters disabled).

    Uses the serving reasoner's own adapter switch, so batch inference and serving pick
    adapters the same way.
    """
    if adapter is not None:
        reasoner.load_adapter(adapter)
    model = reasoner._select(adapter)  # the serving reasoner's adapter switch
    peft = reasoner._peft
    if adapter is None and peft is not None:
        with peft.disable_adapter():
            yield model
    else:
        yield model


def generate_scored(
    reasoner,
    messages: Sequence[Sequence[Mapping[str, Any]]],
    images: Sequence[Image.Image | None],
    *,
    max_new_tokens: int,
    adapter: str | None = None,
) -> list[Generated]:
    """Greedy answers for a batch of chat requests, with per-token log-probabilities.

    Args:
        reasoner: a loaded :class:`~medray.serving.reasoner.Reasoner`.
        messages: one chat per row (image parts are ``{"type": "image"}`` placeholders).
        images: one image per row, or None for a text-only row.
        max_new_tokens: generation limit.
        adapter: LoRA adapter name configured on the reasoner, or None for the base model.
    """
    import torch

    if not messages:
        return []
    proc = reasoner.processor
    tok = proc.tokenizer
    prompts = [proc.apply_chat_template(list(m), add_generation_prompt=True) for m in messages]
    kwargs: dict[str, Any] = {"text": prompts, "return_tensors": "pt", "padding": True}
    present = [im for im in images if im is not None]
    if present:
        kwargs["images"] = present
    side = tok.padding_side
    tok.padding_side = "left"  # decoder-only batches pad on the left
    try:
        inputs = reasoner.encode(kwargs)  # the serving reasoner's processor call
    finally:
        tok.padding_side = side
    eos_ids = reasoner.base.generation_config.eos_token_id
    eos = set(eos_ids if isinstance(eos_ids, list) else [eos_ids]) - {None}
    with active_model(reasoner, adapter) as model, torch.inference_mode():
        out = model.generate(
            **inputs,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            return_dict_in_generate=True,
            output_logits=True,
        )
    width = inputs["input_ids"].shape[1]
    new = out.sequences[:, width:]
    # Step by step from the raw logits: stacking them first held two more copies of
    # batch x steps x vocab floats (2.5 GB each at 32 x 128 x 151,936). One copy to the
    # host for all rows, not two per row.
    logp = torch.stack(
        [
            torch.log_softmax(step.float(), dim=-1).gather(-1, new[:, k, None]).squeeze(-1)
            for k, step in enumerate(out.logits)
        ],
        dim=1,
    ).cpu()
    new = new.cpu()
    prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
    results = []
    for i in range(new.shape[0]):
        ids = new[i].tolist()
        cut = next((k for k, t in enumerate(ids) if t in eos), None)
        finish = "stop" if cut is not None else "length"
        ids = ids[:cut] if cut is not None else ids
        results.append(
            Generated(
                text=tok.decode(ids, skip_special_tokens=True),
                token_ids=tuple(ids),
                logprobs=tuple(float(x) for x in logp[i, : len(ids)].tolist()),
                finish_reason=finish,
                prompt_tokens=int(prompt_lengths[i]),
            )
        )
    return results
