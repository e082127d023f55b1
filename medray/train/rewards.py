"""GRPO rewards for the reasoner: format, answer, consistency, counterfactual faithfulness.

Each reward is a pure function of its inputs; the two that need a model take it as a
callable, so they stay pure (and testable) given that callable:

* :func:`format_reward`: the completion parses as the reasoner's JSON object
  (:func:`medray.contracts.reasoner.parse_answer`): 1.0 as written, 0.5 when it parses only after
  repairs (fences, trailing commas, ...), 0.0 when it does not parse;
* :func:`answer_reward`: the answer field against the reference under the VQA-RAD /
  SLAKE protocol (:mod:`medray.eval.vqa`): closed and choice questions 1/0, open
  questions 1.0 for a normalised exact match, else the reference's token recall;
* :func:`consistency_reward`: cosine similarity of the caption and question sentence
  embeddings, clipped to ``[0, 1]``; :func:`consistency_rewards` embeds a batch with an
  ``encode(texts) -> (n, d) unit vectors`` callable (the ``minilm-l6`` embedder in
  training);
* :func:`counterfactual_reward`: ``0.5 * flipped(roi) + 0.5 * (1 - flipped(random))``
  where ``flipped(x)`` says the answer changed when region ``x`` was inpainted (the
  reasoner's counterfactual contract, :mod:`medray.contracts.counterfactual`, the same
  regions and pixels as batch inference's flip rates): 1.0 for a faithful answer (changes when the region
  it points at is removed, not when a random region of the same size is), 0.5 for an
  answer that ignores the image, 0.0 for the opposite of faithful;
  :func:`counterfactual_rewards` builds both counterfactual images for a batch and asks a
  ``reanswer(images, questions) -> completions`` callable once for all of them.

:func:`total_reward` is the weighted sum with :class:`RewardWeights` (config; default
format 0.2, answer 0.4, consistency 0.2, counterfactual 0.2). A component that cannot be
computed for a row (no box for the counterfactual) is None and counts as 0 in the total.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from medray.config import ConfigError
from medray.contracts.counterfactual import counterfactual_images
from medray.contracts.reasoner import ParseResult, parse_answer
from medray.eval.vqa import is_correct, normalize_answer, same_answer, token_recall

__all__ = [
    "COMPONENTS",
    "RewardWeights",
    "answer_of",
    "answer_reward",
    "completion_text",
    "consistency_reward",
    "consistency_rewards",
    "counterfactual_reward",
    "counterfactual_rewards",
    "format_reward",
    "total_reward",
]

COMPONENTS = ("format", "answer", "consistency", "counterfactual")

Encode = Callable[[Sequence[str]], np.ndarray]
Reanswer = Callable[[Sequence[Image.Image], Sequence[str]], Sequence[str]]


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the reward components in the total (non-negative, not all zero)."""

    format: float = 0.2
    answer: float = 0.4
    consistency: float = 0.2
    counterfactual: float = 0.2

    def __post_init__(self) -> None:
        values = self.as_dict()
        bad = [k for k, v in values.items() if v < 0]
        if bad:
            raise ConfigError(f"reward weights must be non-negative: {bad}")
        if sum(values.values()) <= 0:
            raise ConfigError("at least one reward weight must be positive")

    def as_dict(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in COMPONENTS}


def completion_text(completion: Any) -> str:
    """The text of a completion: a string, or trl's conversational form (a list of
    messages whose ``content`` is a string or a list of text parts)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence):
        parts: list[str] = []
        for msg in completion:
            content = msg.get("content") if isinstance(msg, Mapping) else msg
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, Sequence):
                parts.extend(p.get("text", "") for p in content if isinstance(p, Mapping))
        return "".join(parts)
    raise TypeError(f"a completion must be text or chat messages, got {type(completion).__name__}")


def _parse(completion: Any) -> ParseResult:
    return parse_answer(completion_text(completion))


def answer_of(completion: Any) -> str | None:
    """The ``answer`` field of a completion, or None when no object with one parses."""
    r = _parse(completion)
    if r.value is None or not r.value.answer:
        return None
    return r.value.answer


def format_reward(completion: Any) -> float:
    """1.0 valid JSON object as written, 0.5 valid after repairs, 0.0 otherwise."""
    r = _parse(completion)
    if not r.ok:
        return 0.0
    return 0.5 if r.repaired else 1.0


def answer_reward(
    completion: Any,
    reference: str | None,
    answer_type: str | None,
    choices: Sequence[str] | None = None,
) -> float:
    """Protocol match of the completion's answer with ``reference`` (see module docstring)."""
    pred = answer_of(completion)
    if pred is None or reference is None:
        return 0.0
    if is_correct(pred, reference, answer_type, choices):
        return 1.0
    if answer_type == "open":
        if normalize_answer(pred) == normalize_answer(reference):
            return 1.0
        return float(token_recall(pred, reference) or 0.0)
    return 0.0


def consistency_reward(caption_vec: np.ndarray, question_vec: np.ndarray) -> float:
    """Cosine similarity of two embeddings, clipped to ``[0, 1]``."""
    a, b = np.asarray(caption_vec, dtype=np.float64), np.asarray(question_vec, dtype=np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 0.0
    return float(np.clip(a @ b / (na * nb), 0.0, 1.0))


def consistency_rewards(
    completions: Sequence[Any], questions: Sequence[str], encode: Encode
) -> list[float]:
    """Caption-question consistency for a batch; a completion without a caption gets 0.

    Args:
        completions: completions (text or chat messages).
        questions: the question of each completion.
        encode: texts -> ``(n, d)`` embeddings (one call for all captions and questions).
    """
    if len(completions) != len(questions):
        raise ValueError(f"{len(completions)} completions but {len(questions)} questions")
    captions = []
    for c in completions:
        r = _parse(c)
        captions.append(r.value.caption.strip() if r.value and r.value.caption else "")
    idx = [i for i, cap in enumerate(captions) if cap]
    out = [0.0] * len(completions)
    if not idx:
        return out
    vecs = np.asarray(encode([captions[i] for i in idx] + [questions[i] for i in idx]))
    n = len(idx)
    for j, i in enumerate(idx):
        out[i] = consistency_reward(vecs[j], vecs[n + j])
    return out


def counterfactual_reward(
    pred_answer: str | None,
    roi_answer: str | None,
    random_answer: str | None,
    answer_type: str | None,
) -> float:
    """``0.5 * flipped(roi) + 0.5 * (1 - flipped(random))``; 0.0 without a prediction.

    A missing counterfactual answer (the re-answer did not parse) counts as a flip.
    """
    if pred_answer is None:
        return 0.0
    roi_flip = not same_answer(roi_answer, pred_answer, answer_type)
    random_flip = not same_answer(random_answer, pred_answer, answer_type)
    return 0.5 * roi_flip + 0.5 * (not random_flip)


def counterfactual_rewards(
    completions: Sequence[Any],
    images: Sequence[Image.Image | None],
    rows: Sequence[Mapping[str, Any]],
    reanswer: Reanswer,
    *,
    seed: int = 0,
    box_source: str = "predicted_first",
    details: list[dict[str, Any]] | None = None,
) -> list[float | None]:
    """Counterfactual faithfulness for a batch, with exactly one ``reanswer`` call.

    For each row with an image and a region of interest, the image is re-answered with
    that region inpainted and with random regions of the same sizes inpainted
    (:func:`medray.contracts.counterfactual.counterfactual_images`: regions chosen from
    the completion's boxes and the row's, the random ones keyed by ``sample_id`` and
    ``seed``).

    Args:
        completions: the completions being scored.
        images: each row's image (None: no counterfactual, reward None).
        rows: per completion ``sample_id``, ``question``, ``answer_type`` and the fields
            the region choice reads (``boxes``, ``answer``, ``labels``).
        reanswer: ``(images, questions) -> completions`` of the model being judged.
        seed: seeds the random regions.
        box_source: one of :data:`medray.contracts.counterfactual.SOURCES`.
        details: when given, one dict per row is appended (``pred_answer``,
            ``cf_roi_answer``, ``cf_random_answer``, ``cf_kind``, ``roi_box``, ``random_box``), the
            layout :func:`medray.eval.faithfulness.flip_rates` reads.

    Returns:
        One reward per row; None where the row has no image or no region.
    """
    n = len(completions)
    for name, seq in (("images", images), ("rows", rows)):
        if len(seq) != n:
            raise ValueError(f"{n} completions but {len(seq)} {name}")
    jobs: list[tuple[int, Any, Any]] = []
    batch_images: list[Image.Image] = []
    batch_questions: list[str] = []
    preds = [answer_of(c) for c in completions]
    for i in range(n):
        if images[i] is None or preds[i] is None:
            continue
        parsed = _parse(completions[i]).value
        predicted = [list(b) for b in parsed.boxes] if parsed else []
        cf = counterfactual_images(images[i], rows[i], predicted, source=box_source, seed=seed)
        if cf is None:
            continue
        jobs.append((i, cf))
        batch_images += [cf.roi_image, cf.random_image]
        batch_questions += [rows[i]["question"], rows[i]["question"]]
    out: list[float | None] = [None] * n
    types = [r.get("answer_type") for r in rows]
    details_rows = [{"pred_answer": p, "answer_type": t} for p, t in zip(preds, types, strict=True)]
    # Called exactly once, even with nothing to re-answer: in distributed training the
    # callable may enter a collective (ZeRO-3 gathers the weights), which every rank
    # must enter the same number of times.
    answers = list(reanswer(batch_images, batch_questions))
    if len(answers) != len(batch_images):
        raise ValueError(f"reanswer gave {len(answers)} answers for {len(batch_images)} images")
    for k, (i, cf) in enumerate(jobs):
        roi_ans, rnd_ans = answer_of(answers[2 * k]), answer_of(answers[2 * k + 1])
        out[i] = counterfactual_reward(preds[i], roi_ans, rnd_ans, types[i])
        details_rows[i].update(
            cf_roi_answer=roi_ans, cf_random_answer=rnd_ans, cf_kind=cf.kind,
            roi_box=cf.roi, random_box=cf.random,
        )  # fmt: skip
    if details is not None:
        details.extend(details_rows)
    return out


def total_reward(components: Mapping[str, float | None], weights: RewardWeights) -> float:
    """Weighted sum of the components (a None component counts as 0)."""
    w = weights.as_dict()
    return float(sum(w[k] * (components.get(k) or 0.0) for k in COMPONENTS))
