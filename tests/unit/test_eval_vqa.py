"""VQA-RAD / SLAKE protocol: normalisation fixtures, accuracy and confusion vs scikit-learn."""

from __future__ import annotations

import json

import numpy as np
import pytest
from eval_fixtures import VQA_ROWS

from medray.eval.metrics import score_rows
from medray.eval.vqa import (
    answers_match,
    canonical_yes_no,
    confusion,
    is_correct,
    normalize_answer,
    same_answer,
    token_recall,
    tokens,
    vqa_metrics,
    yes_no_confusion,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("Yes", "yes"),
        ("  The Left Lung. ", "left lung"),
        ("X-Ray", "x ray"),
        ("an MRI", "mri"),
        ("2.5 cm", "2.5 cm"),
        ("Two", "2"),
        ("right-sided, pleural effusion!", "right sided pleural effusion"),
        ("ＣＴ", "ct"),  # full-width letters (NFKC)
        ("肺，心脏。", "肺 心脏"),  # Chinese punctuation
        (None, ""),
    ],
)
def test_normalize_answer(raw, norm):
    assert normalize_answer(raw) == norm


@pytest.mark.parametrize(
    ("pred", "canon"),
    [("Yes.", "yes"), ("no, there is none", "no"), ("True", "yes"), ("否", "no"),
     ("是的，有积液", "yes"), ("maybe", None), ("", None), ("none", None), ("normal", None)],
)  # fmt: skip
def test_canonical_yes_no(pred, canon):
    assert canonical_yes_no(pred) == canon


def test_closed_open_and_choice_matching():
    assert answers_match("Yes, clearly.", "yes", "closed")
    assert not answers_match("yes", "no", "closed")
    assert answers_match("the left", "Left", "closed")  # non yes/no closed: exact
    assert not answers_match("left lung", "left", "open")  # open: exact only
    assert not answers_match(None, "yes", "closed") and not answers_match("", "", "open")
    assert is_correct("(b)", "Right", "choice", ["Left", "Right"])
    assert is_correct("right", "Right", "choice", ["Left", "Right"])
    assert not is_correct("C", "Right", "choice", ["Left", "Right"])
    # same_answer is symmetric (both sides are predictions)
    assert same_answer("Yes, there is", "yes.", "closed") and same_answer(
        "yes.", "Yes, there is", "closed"
    )
    assert not same_answer("left", "right", "open")


def test_token_recall_hand_computed():
    assert token_recall("lung", "left lung") == 0.5
    assert token_recall("the left lung base", "left lung") == 1.0
    assert token_recall("lung lung", "lung lung lung") == pytest.approx(2 / 3)  # multiplicity
    assert token_recall(None, "left lung") == 0.0
    assert token_recall("x", "the") is None  # empty after normalisation
    assert tokens("左肺 lung") == ["左", "肺", "lung"]
    assert token_recall("右肺", "左肺") == 0.5


def test_fixture_accuracy_hand_computed():
    scored = score_rows(VQA_ROWS)
    m = vqa_metrics(r for r in scored if r["task"] == "vqa")
    assert m["n"] == 10 and m["accuracy"] == pytest.approx(0.4)
    assert m["closed"] == {"n": 6, "accuracy": pytest.approx(2 / 6)}
    assert m["open"]["accuracy"] == pytest.approx(1 / 3)
    assert m["open"]["token_recall"] == pytest.approx((0 + 0.5 + 1) / 3)
    assert m["choice"] == {"n": 1, "accuracy": 1.0}
    assert m["by_content_type"]["position"] == {"n": 2, "accuracy": 0.5}
    assert m["by_modality"] == {
        "ct": {"n": 1, "accuracy": 0.0},
        "x-ray": {"n": 9, "accuracy": pytest.approx(4 / 9)},
    }
    assert "by_language" not in m  # no row has a language


def test_closed_accuracy_equals_sklearn_on_normalised_labels():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    words = ["Yes", "yes.", "No", "no, none", "left", "Left.", "right", "maybe"]
    refs = [str(rng.choice(["yes", "no", "left", "right"])) for _ in range(200)]
    preds = [str(rng.choice(words)) for _ in range(200)]
    ours = np.mean([answers_match(p, r, "closed") for p, r in zip(preds, refs, strict=True)])

    def label(text, ref):  # the protocol's label: yes/no reduced when the reference is yes/no
        return (
            (canonical_yes_no(text) or normalize_answer(text))
            if ref in ("yes", "no")
            else normalize_answer(text)
        )

    ref_labels = [label(r, r) for r in refs]
    pred_labels = [label(p, r) for p, r in zip(preds, refs, strict=True)]
    assert ours == pytest.approx(accuracy_score(ref_labels, pred_labels))
    assert 0.1 < ours < 0.9  # a mixed fixture, not all right or all wrong


def test_confusion_equals_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    labels = ["yes", "no", "other"]
    refs = list(rng.choice(labels[:2], 300))
    preds = list(rng.choice(labels, 300))
    assert confusion(refs, preds, labels) == confusion_matrix(refs, preds, labels=labels).tolist()


def test_yes_no_confusion_of_the_fixture():
    cm = yes_no_confusion(score_rows(VQA_ROWS))
    # references yes: q01 -> yes, q07 (unreadable) and q09 (maybe) -> other;
    # references no: q02 -> yes (verbose), q03 -> no, q08 (no answer) -> other
    assert cm["matrix"] == [[1, 0, 2], [1, 1, 1]] and cm["n"] == 6
    assert yes_no_confusion([{"answer_type": "open", "answer": "yes"}]) is None


def test_shared_vqa_rad_answers_normalise_to_their_closed_sets(shared_data):
    """On the real VQA-RAD sample, closed answers are mostly yes/no after normalisation,
    and the protocol matches every reference with itself in another case."""
    records = json.loads((shared_data / "vqa_rad" / "testset.json").read_text())
    closed = [r for r in records if r["answer_type"].strip() == "CLOSED"]
    yes_no = [r for r in closed if canonical_yes_no(str(r["answer"])) is not None]
    assert len(yes_no) / len(closed) > 0.8
    for r in records:
        kind = "closed" if r["answer_type"].strip() == "CLOSED" else "open"
        ans = str(r["answer"])
        if normalize_answer(ans):
            assert answers_match(ans.upper(), ans, kind), ans
