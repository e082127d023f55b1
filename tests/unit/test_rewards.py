"""GRPO rewards: each component on hand-made completions, the weighted total, the batch
helpers with a real callable standing in for the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medray.config import ConfigError
from medray.train.rewards import (
    RewardWeights,
    answer_of,
    answer_reward,
    completion_text,
    consistency_reward,
    consistency_rewards,
    counterfactual_reward,
    counterfactual_rewards,
    format_reward,
    total_reward,
)

pytestmark = pytest.mark.unit


def _answer(answer="yes", caption="X-ray image of the chest.", boxes=((0.5, 0.5, 0.75, 0.75),)):
    return json.dumps(
        {
            "caption": caption,
            "reasoning": ["step"],
            "boxes": [list(b) for b in boxes],
            "answer": answer,
        }
    )


def test_format_reward_grades_valid_repaired_and_broken():
    assert format_reward(_answer()) == 1.0
    assert format_reward("```json\n" + _answer() + "\n```") == 0.5  # repaired (fences)
    assert format_reward('{"caption": "x", "answer": "yes"}') == 0.0  # no reasoning
    assert format_reward("yes") == 0.0
    # trl's conversational completions
    assert format_reward([{"role": "assistant", "content": _answer()}]) == 1.0


def test_completion_text_reads_messages_and_rejects_other_types():
    msgs = [
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
        }
    ]
    assert completion_text(msgs) == "ab"
    with pytest.raises(TypeError):
        completion_text(3)


def test_answer_reward_closed_open_and_choice():
    assert answer_reward(_answer("Yes, there is."), "yes", "closed") == 1.0
    assert answer_reward(_answer("no"), "yes", "closed") == 0.0
    assert answer_reward(_answer("The left lung."), "left lung", "open") == 1.0
    assert answer_reward(_answer("lung"), "left lung", "open") == 0.5  # token recall
    assert (
        answer_reward(_answer("B"), "Pleural effusion", "choice", ["Nodule", "Pleural effusion"])
        == 1.0
    )
    assert answer_reward("not json", "yes", "closed") == 0.0
    assert answer_of("not json") is None


def test_consistency_reward_is_clipped_cosine():
    assert consistency_reward(np.array([1.0, 0.0]), np.array([2.0, 0.0])) == pytest.approx(1.0)
    assert consistency_reward(np.array([1.0, 0.0]), np.array([-1.0, 0.0])) == 0.0
    assert consistency_reward(np.array([1.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(2**-0.5)
    assert consistency_reward(np.zeros(2), np.array([1.0, 0.0])) == 0.0


def test_consistency_rewards_embed_captions_and_questions_once():
    calls = []

    def encode(texts):  # a bag-of-letters embedding: a real, deterministic encoder
        calls.append(list(texts))
        return np.array(
            [[t.lower().count(c) for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts], float
        )

    out = consistency_rewards(
        [_answer(caption="chest x-ray"), "broken", _answer(caption="zzz")],
        ["chest x-ray?", "q", "abc"],
        encode,
    )
    assert len(calls) == 1 and len(calls[0]) == 4  # two captions + two questions
    assert out[0] == pytest.approx(1.0) and out[1] == 0.0 and out[2] == 0.0


def test_consistency_with_the_real_embedder_prefers_a_related_caption():
    from medray.models.encoders import TextEncoder

    enc = TextEncoder("minilm-l6")
    q = "Is there a pleural effusion in the chest X-ray?"
    related, unrelated = consistency_rewards(
        [
            _answer(caption="Chest X-ray with fluid in the pleural space."),
            _answer(caption="A recipe for pancakes."),
        ],
        [q, q],
        enc.encode,
    )
    assert related > unrelated + 0.2


def test_counterfactual_reward_table():
    assert counterfactual_reward("yes", "no", "yes", "closed") == 1.0  # faithful
    assert counterfactual_reward("yes", "yes", "yes", "closed") == 0.5  # ignores the image
    assert counterfactual_reward("yes", "yes", "no", "closed") == 0.0  # opposite of faithful
    assert counterfactual_reward("yes", "no", "no", "closed") == 0.5
    assert counterfactual_reward(None, "no", "yes", "closed") == 0.0
    assert counterfactual_reward("yes", None, "Yes.", "closed") == 1.0  # unparsed re-answer = flip


def _row(k: int) -> dict:
    return {"sample_id": f"r{k}", "question": "q", "answer_type": "closed", "boxes": None}


def test_counterfactual_rewards_with_a_model_that_looks_at_the_box():
    # The "model" answers yes iff the bright square at (50..75, 50..75) is still there:
    # a faithful model, so inpainting its box flips it and a random region does not.
    arr = np.zeros((112, 112, 3), np.uint8)
    arr[8:104, 8:104] = 90  # the body, on a black background: the random region goes here
    arr[56:84, 56:84] = 255
    img = Image.fromarray(arr)
    seen = []

    def reanswer(images, questions):
        seen.append(len(images))
        return [_answer("yes" if np.asarray(im)[70, 70, 0] > 128 else "no") for im in images]

    details: list[dict] = []
    out = counterfactual_rewards(
        [_answer("yes"), _answer("yes", boxes=()), "broken"],
        [img, img, img],
        [_row(k) for k in range(3)],
        reanswer,
        details=details,
    )
    assert out == [1.0, None, None]  # row 2: no box anywhere; row 3: no answer
    assert seen == [2]  # one call, ROI + random image of the one scorable row
    assert details[0]["cf_roi_answer"] == "no" and details[0]["cf_random_answer"] == "yes"
    # A model that ignores the image gets 0.5.
    blind = counterfactual_rewards(
        [_answer("yes")],
        [img],
        [_row(0)],
        lambda ims, qs: [_answer("yes")] * len(ims),
    )
    assert blind == [0.5]
    # Nothing to score: the callable is still called once (a collective under ZeRO-3).
    calls = []
    assert counterfactual_rewards(
        ["broken"], [img], [_row(0)], lambda ims, qs: calls.append(len(ims)) or []
    ) == [None]
    assert calls == [0]
    with pytest.raises(ValueError, match="answers"):
        counterfactual_rewards([_answer()], [img], [_row(0)], lambda ims, qs: [])


def test_weights_and_total():
    w = RewardWeights()
    assert w.as_dict() == {"format": 0.2, "answer": 0.4, "consistency": 0.2, "counterfactual": 0.2}
    comps = {"format": 1.0, "answer": 1.0, "consistency": 0.5, "counterfactual": None}
    assert total_reward(comps, w) == pytest.approx(0.2 + 0.4 + 0.1)
    assert total_reward(comps, RewardWeights(1, 0, 0, 0)) == 1.0
    with pytest.raises(ConfigError, match="non-negative"):
        RewardWeights(format=-1)
    with pytest.raises(ConfigError, match="positive"):
        RewardWeights(0, 0, 0, 0)
