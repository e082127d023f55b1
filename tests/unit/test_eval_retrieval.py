"""Retrieval metrics: hand-computed fixtures and a cross-check against ranx."""

from __future__ import annotations

import numpy as np
import pytest

from medray.eval.retrieval import image_to_text_accuracy, retrieval_metrics

pytestmark = pytest.mark.unit


def test_hand_computed_fixture():
    # Two images share report "x"; image 1 is closer to "y" than to its own "x".
    img = np.array([[1.0, 0.0], [0.2, 0.98], [0.0, 1.0]])
    txt = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    m = retrieval_metrics(img, txt, ["x", "x", "y"], ks=(1, 2))
    assert m["i2t_R@1"] == pytest.approx(2 / 3) and m["i2t_R@2"] == 1.0
    assert m["t2i_R@1"] == 1.0  # "x" -> image 0 first; "y" -> image 2 first
    assert m["n_texts"] == 2 and m["n_images"] == 3
    assert image_to_text_accuracy(img, txt, ["x", "x", "y"]) == pytest.approx(2 / 3)


def test_perfect_and_reversed():
    e = np.eye(5)
    assert retrieval_metrics(e, e, list("abcde"), ks=(1,))["i2t_R@1"] == 1.0
    m = retrieval_metrics(e, e[::-1], list("abcde"), ks=(1, 5))
    assert m["i2t_R@1"] == pytest.approx(0.2) and m["i2t_R@5"] == 1.0


def test_bad_input():
    with pytest.raises(ValueError, match="same length"):
        retrieval_metrics(np.eye(2), np.eye(3), ["a", "b"])
    with pytest.raises(ValueError, match="no pairs"):
        retrieval_metrics(np.zeros((0, 2)), np.zeros((0, 2)), [])


def test_agrees_with_ranx_on_random_embeddings():
    """The numpy implementation equals ranx's hit_rate@k (a kept IR library)."""
    from ranx import Qrels, Run, evaluate

    rng = np.random.default_rng(0)
    n, d = 60, 8
    texts = [f"report {i % 17}" for i in range(n)]  # duplicates, as in templated reports
    img = rng.normal(size=(n, d))
    txt = rng.normal(size=(n, d))
    for i, t in enumerate(texts):  # identical texts must have identical embeddings
        txt[i] = txt[texts.index(t)]
    ours = retrieval_metrics(img, txt, texts, ks=(1, 5, 10))

    unique = list(dict.fromkeys(texts))
    docs = txt[[texts.index(t) for t in unique]]
    scores = img @ docs.T
    run_i2t = {
        f"i{i}": {f"t{j}": float(scores[i, j]) for j in range(len(unique))} for i in range(n)
    }
    qrels_i2t = {f"i{i}": {f"t{unique.index(t)}": 1} for i, t in enumerate(texts)}
    run_t2i = {
        f"t{j}": {f"i{i}": float(scores[i, j]) for i in range(n)} for j in range(len(unique))
    }
    qrels_t2i = {
        f"t{j}": {f"i{i}": 1 for i, t in enumerate(texts) if t == u} for j, u in enumerate(unique)
    }
    metrics = ["hit_rate@1", "hit_rate@5", "hit_rate@10"]
    ref_i2t = evaluate(Qrels(qrels_i2t), Run(run_i2t), metrics)
    ref_t2i = evaluate(Qrels(qrels_t2i), Run(run_t2i), metrics)
    for k in (1, 5, 10):
        assert ours[f"i2t_R@{k}"] == pytest.approx(ref_i2t[f"hit_rate@{k}"])
        assert ours[f"t2i_R@{k}"] == pytest.approx(ref_t2i[f"hit_rate@{k}"])
