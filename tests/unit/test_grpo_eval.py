"""SFT-vs-GRPO evaluation metrics from hand-made completions and real scoring callables."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from medray.train.grpo_eval import score_rows
from medray.train.rewards import RewardWeights

pytestmark = pytest.mark.unit


def _ans(answer, boxes=((0.5, 0.5, 0.75, 0.75),), caption="chest x-ray"):
    return json.dumps(
        {
            "caption": caption,
            "reasoning": ["s"],
            "boxes": [list(b) for b in boxes],
            "answer": answer,
        }
    )


def _encode(texts):  # bag of letters: a real, deterministic embedding
    return np.array(
        [[t.lower().count(c) + 1e-3 for c in "abcdefghijklmnopqrstuvwxyz"] for t in texts]
    )


def test_score_rows_reports_rewards_validity_accuracy_and_flips():
    arr = np.zeros((112, 112, 3), np.uint8)
    arr[8:104, 8:104] = 90  # the body, on a black background: the random region goes here
    arr[56:84, 56:84] = 255
    img = Image.fromarray(arr)

    def reanswer(images, questions):  # answers from the bright square: faithful
        return [_ans("yes" if np.asarray(im)[70, 70, 0] > 128 else "no") for im in images]

    rows = [
        {
            "sample_id": "a",
            "image": img,
            "question": "chest x-ray?",
            "answer": "yes",
            "answer_type": "closed",
        },
        {
            "sample_id": "b",
            "image": img,
            "question": "chest x-ray?",
            "answer": "yes",
            "answer_type": "closed",
        },
        {
            "sample_id": "c",
            "image": img,
            "question": "which side?",
            "answer": "left lung",
            "answer_type": "open",
        },
    ]
    completions = [_ans("yes"), "not json", _ans("lung", boxes=())]
    m = score_rows(
        rows,
        completions,
        encode=_encode,
        reanswer=reanswer,
        weights=RewardWeights(),
        blank_completions=["garbage"] * 3,
    )
    assert m["n"] == 3
    assert m["json_validity"] == pytest.approx(2 / 3)
    assert m["box_rate"] == pytest.approx(1 / 3)
    assert m["closed_accuracy"] == 0.5 and m["open_accuracy"] == 0.0
    assert m["reward_answer"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert m["reward_counterfactual"] == 1.0  # only row 0 has an answer and a box
    f = m["faithfulness"]
    assert f["roi_flip_rate"] == 1.0 and f["random_flip_rate"] == 0.0
    assert m["blank_control"]["n"] == 3 and m["blank_control"]["blank_accuracy"] == 0.0
    # row 0: 0.2 format + 0.4 answer + 0.2 consistency (identical texts) + 0.2 faithful
    assert m["reward"] == pytest.approx(
        (1.0 + 0.0 + (0.2 * 1 + 0.4 * 0.5 + 0.2 * m_cons(m))) / 3, abs=1e-6
    )


def m_cons(m):
    # consistency of row 2 ("chest x-ray" vs "which side?"), recovered from the mean
    return 3 * m["reward_consistency"] - 1.0


def test_score_rows_refuses_no_rows():
    with pytest.raises(ValueError, match="no rows"):
        score_rows([], [], encode=_encode, reanswer=lambda i, q: [], weights=RewardWeights())
