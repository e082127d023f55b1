"""MCQ accuracy (vs scikit-learn) and perplexity (vs torch cross-entropy)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from medray.eval.mcq import letter, mcq_accuracy, perplexity, resolve_choice

pytestmark = pytest.mark.unit

CHOICES = ["Aspirin", "Warfarin", "Heparin", "A"]


@pytest.mark.parametrize(
    ("pred", "index"),
    [("B", 1), ("(b)", 1), ("B.", 1), ("b)", 1), ("Option C", 2), ("Answer: c", 2),
     ("The answer is B", 1), ("B. Warfarin", 1), ("warfarin", 1), ("  heparin. ", 2),
     ("A", 3),  # an option whose text is "A" wins over the letter A
     ("B. Heparin", None),  # letter and text disagree
     ("E", None), ("Because of bleeding", None), ("", None), (None, None)],
)  # fmt: skip
def test_resolve_choice(pred, index):
    assert resolve_choice(pred, CHOICES) == index


def test_accuracy_equals_sklearn():
    from sklearn.metrics import accuracy_score

    rng = np.random.default_rng(0)
    choices = [["w", "x", "y", "z"]] * 120
    gold = rng.integers(0, 4, 120)
    pred = np.where(rng.uniform(size=120) < 0.6, gold, rng.integers(0, 4, 120))
    pred_text = [f"({letter(i)})" if k % 2 else ["w", "x", "y", "z"][i] for k, i in enumerate(pred)]
    answers = [["w", "x", "y", "z"][i] for i in gold]
    assert mcq_accuracy(pred_text, answers, choices) == pytest.approx(accuracy_score(gold, pred))
    assert mcq_accuracy([], [], []) is None
    with pytest.raises(ValueError, match="not one of the choices"):
        mcq_accuracy(["A"], ["v"], [["w", "x"]])


def test_perplexity_equals_torch_cross_entropy():
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    lengths = [3, 7, 1, 5]
    logits = [torch.randn(n, 50, generator=g) for n in lengths]
    targets = [torch.randint(0, 50, (n,), generator=g) for n in lengths]
    nll = [
        F.cross_entropy(lo, t, reduction="sum").item()
        for lo, t in zip(logits, targets, strict=True)
    ]
    ref = math.exp(F.cross_entropy(torch.cat(logits), torch.cat(targets)).item())
    assert perplexity(nll, lengths) == pytest.approx(ref, rel=1e-5)
    assert perplexity([], []) is None
    with pytest.raises(ValueError, match="same length"):
        perplexity([1.0], [])


def test_confusion_and_answered_rate_by_hand():
    from medray.eval.mcq import answered_rate, confusion, names_letter

    choices = [["x", "y", "z"]] * 5
    preds = ["A", "B. y", "z", None, "w"]
    answers = ["x", "x", "z", "y", "y"]
    assert confusion(preds, answers, choices) == {
        "A": {"A": 1, "B": 1},
        "B": {"none": 2},
        "C": {"C": 1},
    }
    assert answered_rate(preds, choices) == pytest.approx(3 / 5)
    assert answered_rate([], []) is None
    assert names_letter("(b) something") and names_letter("Answer: C") and not names_letter("zz")
    with pytest.raises(ValueError, match="not one of the choices"):
        confusion(["A"], ["q"], [["x", "y"]])
