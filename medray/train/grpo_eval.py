"""Held-out evaluation of a reasoner policy with the GRPO rewards, for SFT-vs-GRPO tables.

:func:`evaluate_policy` answers every held-out row greedily (same prompts for every model)
and, optionally, by sampling at the GRPO temperature: the distribution GRPO optimises,
scored exactly as the training reward is (sampled answer, greedy re-answers). It scores the
answers with the reward functions of :mod:`medray.train.rewards` and the project's
metrics: mean total reward and each component, JSON validity
(:func:`medray.contracts.reasoner.parse_answer`), closed / open accuracy (:mod:`medray.eval.vqa`),
counterfactual flip rates for the box region vs a random region of the same size
(:mod:`medray.eval.faithfulness`) and, as the text-prior control, accuracy with blank
images.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from medray.contracts.reasoner import blank_like, parse_answer
from medray.eval.faithfulness import blank_control, flip_rates
from medray.eval.vqa import is_correct, token_recall, vqa_metrics
from medray.train import rewards as R

log = logging.getLogger(__name__)


def score_rows(
    rows: Sequence[Mapping[str, Any]],
    completions: Sequence[str],
    *,
    encode,
    reanswer,
    weights: R.RewardWeights,
    box_source: str = "predicted_first",
    seed: int = 0,
    blank_completions: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Metrics of ``completions`` (one per row) given the scoring callables.

    Args:
        rows: unified-schema rows with ``sample_id``, ``image`` (PIL), ``question``,
            ``answer``, ``answer_type``, ``choices``, ``boxes`` (``labels``).
        completions: the policy's raw answers.
        encode: the consistency embedder; reanswer: the same policy, for counterfactuals.
        blank_completions: the policy's answers with blank images (optional control).
    """
    n = len(rows)
    if n == 0:
        raise ValueError("no rows to evaluate")
    questions = [r["question"] for r in rows]
    comps: dict[str, list[float | None]] = {
        "format": [R.format_reward(c) for c in completions],
        "answer": [
            R.answer_reward(c, r.get("answer"), r.get("answer_type"), r.get("choices"))
            for c, r in zip(completions, rows, strict=True)
        ],
        "consistency": R.consistency_rewards(completions, questions, encode),
    }
    details: list[dict[str, Any]] = []
    comps["counterfactual"] = R.counterfactual_rewards(
        completions,
        [r.get("image") for r in rows],
        rows,
        reanswer,
        seed=seed,
        box_source=box_source,
        details=details,
    )
    totals = [R.total_reward({k: comps[k][i] for k in R.COMPONENTS}, weights) for i in range(n)]
    scored = []
    for i, (r, c) in enumerate(zip(rows, completions, strict=True)):
        pred = R.answer_of(c)
        scored.append(
            {
                "answer": r.get("answer"),
                "answer_type": r.get("answer_type"),
                "choices": r.get("choices"),
                "pred_answer": pred,
                "correct": is_correct(
                    pred, r.get("answer"), r.get("answer_type"), r.get("choices")
                ),
                "recall": token_recall(pred, r.get("answer"))
                if r.get("answer_type") == "open"
                else None,
                # An unparseable blank-image answer counts (as wrong), not as missing.
                "blank_answer": (R.answer_of(blank_completions[i]) or "")
                if blank_completions
                else None,
                **{k: v for k, v in details[i].items() if k.startswith("cf_")},
            }
        )
    parsed = [parse_answer(c) for c in completions]
    vqa = vqa_metrics(scored)

    def mean(xs):
        xs = [x for x in xs if x is not None]
        return sum(xs) / len(xs) if xs else None

    return {
        "n": n,
        "reward": mean(totals),
        **{f"reward_{k}": mean(v) for k, v in comps.items()},
        "json_validity": sum(p.ok for p in parsed) / n,
        "box_rate": sum(bool(p.value and p.value.boxes) for p in parsed) / n,
        "accuracy": vqa.get("accuracy"),
        "closed_accuracy": (vqa.get("closed") or {}).get("accuracy"),
        "open_accuracy": (vqa.get("open") or {}).get("accuracy"),
        "open_token_recall": (vqa.get("open") or {}).get("token_recall"),
        "faithfulness": flip_rates(scored),
        "blank_control": blank_control(scored) if blank_completions else None,
    }


def evaluate_policy(
    base: str,
    adapter: str | None,
    rows: Sequence[Mapping[str, Any]],
    *,
    weights: R.RewardWeights,
    embedder: str = "minilm-l6",
    max_new_tokens: int = 128,
    box_source: str = "predicted_first",
    blank: bool = True,
    encode=None,
    samples: int = 0,
    temperature: float = 1.0,
) -> dict[str, Any]:
    """Load a policy (base + optional adapter), answer ``rows`` and :func:`score_rows`.

    With ``samples > 0`` the result also has ``"sampled"``: the same metrics over ``samples``
    answers per row drawn at ``temperature`` (seeded, so two policies see the same draws of
    the random stream), with the counterfactual re-answers greedy as in training.
    """
    import torch

    from medray.train.grpo import generate_answers, load_policy, load_processor

    torch.manual_seed(0)
    model = load_policy(base, adapter).eval()
    processor = load_processor(base, adapter)
    if encode is None:
        from medray.models.encoders import TextEncoder

        encode = TextEncoder(embedder).encode
    images = [r["image"] for r in rows]
    questions = [r["question"] for r in rows]

    def reanswer(ims, qs):
        return generate_answers(model, processor, ims, qs, max_new_tokens)

    completions = reanswer(images, questions)
    blank_completions = reanswer([blank_like(im) for im in images], questions) if blank else None
    result = score_rows(
        rows,
        completions,
        encode=encode,
        reanswer=reanswer,
        weights=weights,
        box_source=box_source,
        blank_completions=blank_completions,
    )
    if samples > 0:
        torch.manual_seed(0)
        repeated = [r for _ in range(samples) for r in rows]
        drawn = generate_answers(
            model,
            processor,
            [r["image"] for r in repeated],
            [r["question"] for r in repeated],
            max_new_tokens,
            temperature=temperature,
        )
        result["sampled"] = {
            "samples_per_row": samples,
            "temperature": temperature,
            **score_rows(
                repeated,
                drawn,
                encode=encode,
                reanswer=reanswer,
                weights=weights,
                box_source=box_source,
            ),
        }
    return result
