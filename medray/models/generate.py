"""THE generate path: one function turns prompts (+ images) into generated answers.

Batch inference, GRPO (its counterfactual re-answers and in-job evaluation), the SFT
evaluation and the Serve deployments (reasoner, summariser, medical QA) all call
:func:`generate`, so for the same model, prompt, image and :class:`GenerationParams` they
decode the same tokens. What to put in the prompt is each model's contract
(:mod:`medray.contracts`); which weights to use is :mod:`medray.models.finetuned`.

* Prompts are rendered with the model's chat template (:func:`render`, for chat models) or
  used as plain text (the text models' contracts), then encoded in one left-padded batch
  (:func:`encode`).
* Greedy unless the params ask for sampling (temperature >= 1e-3: top-p, no top-k). A VLM
  never generates its image placeholder token (a stray one breaks the next forward pass).
* With ``scores`` each token's log-probability under the raw logits comes back too.
* ``streamer`` / ``stopping`` pass through to ``model.generate`` for streaming callers.

:func:`completion_nll` is the teacher-forced counterpart for text models: the summed
negative log-likelihood of a reference completion after its prompt (perplexity).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Generated",
    "GenerationParams",
    "completion_nll",
    "encode",
    "generate",
    "render",
    "token_offsets",
    "tokenizer_of",
]


MIN_SAMPLING_TEMPERATURE = 1e-3


@dataclass(frozen=True)
class GenerationParams:
    """Generation settings of one request (greedy when ``temperature`` is 0).

    Raises:
        ValueError: a non-positive length, a negative temperature or a top-p outside (0, 1].
    """

    max_new_tokens: int = 96
    temperature: float = 0.0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be at least 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")

    def sampling(self) -> dict[str, Any]:
        """``model.generate`` keyword arguments for these settings. A temperature under
        :data:`MIN_SAMPLING_TEMPERATURE` is greedy: sampling there is greedy in effect, and
        logits divided by a denormal one (5e-324) overflow to inf and the sampler fails."""
        if self.temperature >= MIN_SAMPLING_TEMPERATURE:
            return {
                "do_sample": True,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": 0,
            }
        return {"do_sample": False}


@dataclass(frozen=True)
class Generated:
    """One generated answer: text, token ids (end-of-sequence cut), their log-probs
    (empty unless scores were asked for)."""

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    finish_reason: str  # stop | length
    prompt_tokens: int


def tokenizer_of(processing) -> Any:
    """The tokenizer of a processor (VLM) or the tokenizer itself (text LM)."""
    return getattr(processing, "tokenizer", processing)


def render(processing, messages: Sequence[Mapping[str, Any]]) -> str:
    """A chat rendered with the model's template, ready for the assistant's turn."""
    return processing.apply_chat_template(
        list(messages), add_generation_prompt=True, tokenize=False
    )


def encode(processing, texts: Sequence[str], images: Sequence[Any] = (), device: Any = "cpu"):
    """One left-padded batch of ``texts`` (with ``images`` in placeholder order) on ``device``.

    On an accelerator a VLM processor resizes and patches the images there (its
    torchvision backend takes ``device``) instead of on the host: 70 ms instead of 148 ms
    for 32 images of 448x448 on an H200 (``benchmarks/README.md``, ``gpu_models.py``).
    """
    tok = tokenizer_of(processing)
    kwargs: dict[str, Any] = {"text": list(texts), "return_tensors": "pt", "padding": True}
    if images:
        kwargs["images"] = list(images)
        if str(device) != "cpu":
            kwargs["device"] = device
    side = tok.padding_side
    tok.padding_side = "left"  # decoder-only batches pad on the left
    try:
        inputs = processing(**kwargs)
    finally:
        tok.padding_side = side
    return inputs.to(device)


def _eos(model) -> set[int]:
    ids = model.generation_config.eos_token_id
    return set(ids if isinstance(ids, list) else [ids]) - {None}


def generate(
    model,
    processing,
    texts: Sequence[str],
    images: Sequence[Any] = (),
    params: GenerationParams = GenerationParams(),
    *,
    scores: bool = False,
    streamer: Any = None,
    stopping: Sequence[Any] = (),
) -> list[Generated]:
    """Answers of ``model`` for rendered prompts ``texts`` (one per row).

    Args:
        model: a causal LM or VLM in eval mode (a ``PeftModel`` with its adapter chosen).
        processing: its processor (VLM) or tokenizer (text LM).
        texts: prompts (:func:`render` for chat models, plain text for text models).
        images: every row's images, in the order of the prompts' placeholders.
        params: length and sampling.
        scores: also return each generated token's log-probability.
        streamer, stopping: passed to ``model.generate`` (streaming callers).
    """
    import torch

    if not texts:
        return []
    tok = tokenizer_of(processing)
    device = next(model.parameters()).device
    inputs = encode(processing, texts, images, device)
    kwargs: dict[str, Any] = dict(
        max_new_tokens=params.max_new_tokens,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        return_dict_in_generate=True,
        output_logits=scores,
        **params.sampling(),
    )
    image_token = getattr(model.config, "image_token_id", None)
    if image_token is not None:
        kwargs["suppress_tokens"] = [image_token]
    if streamer is not None:
        kwargs["streamer"] = streamer
    if stopping:
        from transformers import StoppingCriteriaList

        kwargs["stopping_criteria"] = StoppingCriteriaList(list(stopping))
    with torch.no_grad():
        out = model.generate(**inputs, **kwargs)
    width = inputs["input_ids"].shape[1]
    new = out.sequences[:, width:]
    logp = None
    if scores:
        # Step by step from the raw logits: stacking them first held two more copies of
        # batch x steps x vocab floats (2.5 GB each at 32 x 128 x 151,936).
        logp = torch.stack(
            [
                torch.log_softmax(step.float(), dim=-1).gather(-1, new[:, k, None]).squeeze(-1)
                for k, step in enumerate(out.logits)
            ],
            dim=1,
        ).cpu()
    new = new.cpu()
    eos = _eos(model)
    prompt_lengths = inputs["attention_mask"].sum(dim=1).tolist()
    results = []
    for i in range(new.shape[0]):
        ids = new[i].tolist()
        cut = next((k for k, t in enumerate(ids) if t in eos), None)
        ids = ids[:cut] if cut is not None else ids
        finish = "stop" if cut is not None or len(ids) < params.max_new_tokens else "length"
        results.append(
            Generated(
                text=tok.decode(ids, skip_special_tokens=True),
                token_ids=tuple(ids),
                logprobs=tuple(float(x) for x in logp[i, : len(ids)].tolist())
                if logp is not None
                else (),
                finish_reason=finish,
                prompt_tokens=int(prompt_lengths[i]),
            )
        )
    return results


def token_offsets(tokenizer, token_ids: Sequence[int]) -> list[int]:
    """End character offset of each token in the decoded text (prefix decoding, so tokens
    that split a multi-byte character are attributed correctly)."""
    ends, prev = [], 0
    for k in range(len(token_ids)):
        n = len(tokenizer.decode(list(token_ids[: k + 1]), skip_special_tokens=True))
        prev = max(prev, n)
        ends.append(prev)
    return ends


def completion_nll(
    model, tokenizer, prompts: Sequence[str], completions: Sequence[str]
) -> list[tuple[float, int]]:
    """``(nll, n_tokens)`` per row: the summed negative log-likelihood (nats) of each
    completion's tokens after its prompt, under a text LM, teacher-forced in one batch.

    Prompt and completion are tokenized separately and joined (no end-of-sequence token),
    the way generation continues a prompt; an empty completion gives ``(0.0, 0)``.
    """
    import torch

    if len(prompts) != len(completions):
        raise ValueError("prompts and completions must have the same length")
    if not prompts:
        return []
    seqs, spans = [], []
    for p, c in zip(prompts, completions, strict=True):
        p_ids = tokenizer(p)["input_ids"]
        if not p_ids:
            raise ValueError("completion_nll needs a non-empty prompt")
        c_ids = tokenizer(c, add_special_tokens=False)["input_ids"] if c else []
        seqs.append(p_ids + c_ids)
        spans.append((len(p_ids), len(c_ids)))
    width = max(len(s) for s in seqs)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):  # right padding: positions are the unpadded ones
        ids[i, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, : len(s)] = 1
    device = next(model.parameters()).device
    with torch.no_grad():
        logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits
    logp = torch.log_softmax(logits.float(), dim=-1).cpu()
    out = []
    for i, (start, n) in enumerate(spans):
        if not n:
            out.append((0.0, 0))
            continue
        # token t is predicted at position t - 1
        target = ids[i, start : start + n]
        lp = logp[i, start - 1 : start + n - 1].gather(-1, target[:, None]).squeeze(-1)
        out.append((float(-lp.sum()), n))
    return out
