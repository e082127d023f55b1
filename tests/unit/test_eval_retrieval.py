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


def test_ties_count_against_the_query():
    """A collapsed model (every embedding equal) ranks nothing first: R@1 is 0, R@n is 1."""
    img, txt = np.ones((4, 3)), np.ones((4, 3))
    m = retrieval_metrics(img, txt, list("abcd"), ks=(1, 3, 4))
    assert m["i2t_R@1"] == 0.0 and m["t2i_R@1"] == 0.0
    assert m["i2t_R@3"] == 0.0 and m["i2t_R@4"] == 1.0 and m["t2i_R@4"] == 1.0
    # Two images of one text tie with each other: that does not push the text down.
    m = retrieval_metrics(np.eye(3)[[0, 0, 1]], np.eye(3)[[0, 0, 1]], ["x", "x", "y"], ks=(1,))
    assert m["t2i_R@1"] == 1.0 and m["i2t_R@1"] == 1.0


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


def test_ranked_metrics_agree_with_ranx():
    """Recall@K, hit rate@K and MRR of ranked id lists equal ranx's on random runs."""
    from ranx import Qrels, Run, evaluate

    from medray.eval.retrieval import ranked_metrics

    rng = np.random.default_rng(1)
    docs = [f"d{i}" for i in range(30)]
    retrieved, relevant = [], []
    for _ in range(40):
        retrieved.append([str(d) for d in rng.permutation(docs)[:12]])
        relevant.append(
            [str(d) for d in rng.choice(docs, size=int(rng.integers(1, 4)), replace=False)]
        )
    ours = ranked_metrics(retrieved, relevant, ks=(1, 5, 10))
    run = {
        f"q{i}": {d: 1.0 / (r + 1) for r, d in enumerate(ret)} for i, ret in enumerate(retrieved)
    }
    qrels = {f"q{i}": dict.fromkeys(rel, 1) for i, rel in enumerate(relevant)}
    names = ["recall@1", "recall@5", "recall@10", "hit_rate@5", "mrr"]
    ref = evaluate(Qrels(qrels), Run(run), names)
    for k in (1, 5, 10):
        assert ours[f"R@{k}"] == pytest.approx(ref[f"recall@{k}"])
    assert ours["hit@5"] == pytest.approx(ref["hit_rate@5"])
    assert ours["MRR"] == pytest.approx(ref["mrr"])
    assert 0 < ours["R@5"] < 1


def test_ranked_metrics_hand_computed():
    from medray.eval.retrieval import ranked_metrics

    m = ranked_metrics([["a", "b", "c"], ["x", "y"], ["p"]], [["b", "c"], ["z"], []], ks=(1, 2))
    assert m["n_queries"] == 2  # the query without relevant ids is skipped
    assert m["R@1"] == 0.0 and m["R@2"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert m["hit@2"] == 0.5 and m["MRR"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no query has a relevant id"):
        ranked_metrics([["a"]], [[]])
