"""Cross-modal retrieval metrics (image <-> report).

Reports are often identical across images (templated findings), so documents are the
*unique* texts: an image query is relevant to the one text it was paired with; a text
query is relevant to every image paired with it. ``R@K`` is the hit rate (some relevant
item is in the top K), the usual CLIP retrieval metric; for image->text, where each query
has one relevant text, it equals recall@K. Ties count against the query: a relevant item
ranks below every irrelevant item with an equal score, so a model that gives every text
(or image) the same embedding scores 0, not 1 (an optimistic rule would reward collapse).
Computed with numpy (ranx takes ~30 s to JIT per process);
``tests/unit/test_eval_retrieval.py`` checks it against ranx.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def _unique_docs(
    text_emb: np.ndarray, texts: Sequence[str]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    unique = list(dict.fromkeys(texts))
    index = {t: i for i, t in enumerate(unique)}
    docs = text_emb[[list(texts).index(t) for t in unique]]
    return unique, docs, np.array([index[t] for t in texts])


def retrieval_metrics(
    image_emb: np.ndarray,
    text_emb: np.ndarray,
    texts: Sequence[str],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Image->text and text->image R@K (hit rate) for paired, L2-normalised embeddings.

    Args:
        image_emb: (n, d) image embeddings.
        text_emb: (n, d) embeddings of each image's paired text.
        texts: the n paired texts (identical texts are one document).
        ks: cut-offs.

    Returns:
        ``{"i2t_R@1": ..., "t2i_R@1": ..., ...}`` plus ``n_images`` and ``n_texts``.
    """
    if not len(image_emb) == len(text_emb) == len(texts):
        raise ValueError("image_emb, text_emb and texts must have the same length")
    if len(texts) == 0:
        raise ValueError("no pairs to evaluate")
    unique, docs, doc_of = _unique_docs(text_emb, texts)
    scores = image_emb @ docs.T  # (n_images, n_texts)
    n = np.arange(len(texts))
    # Rank of each image's own text: how many other texts score at least as high.
    i2t_rank = (scores >= scores[n, doc_of][:, None]).sum(axis=1) - 1
    # For each text, the rank of its best image: how many images of other texts score at
    # least as high.
    by_text = scores.T  # (n_texts, n_images)
    t2i_rank = np.full(len(unique), np.inf)
    for d in range(len(unique)):
        mine = doc_of == d
        t2i_rank[d] = (by_text[d, ~mine] >= by_text[d, mine].max()).sum()
    out = {f"i2t_R@{k}": float(np.mean(i2t_rank < k)) for k in ks}
    out |= {f"t2i_R@{k}": float(np.mean(t2i_rank < k)) for k in ks}
    return out | {"n_images": len(texts), "n_texts": len(unique)}


def image_to_text_accuracy(
    image_emb: np.ndarray, text_emb: np.ndarray, texts: Sequence[str]
) -> float:
    """Fraction of images whose most similar text (among the unique texts) is their own."""
    return retrieval_metrics(image_emb, text_emb, texts, ks=(1,))["i2t_R@1"]


def ranked_metrics(
    retrieved: Sequence[Sequence[str]],
    relevant: Sequence[Sequence[str]],
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float | int]:
    """Recall@K, hit rate@K and MRR of ranked result lists (e.g. a search run's ids).

    Args:
        retrieved: per query, the returned ids, best first.
        relevant: per query, the ids that are relevant; queries with none are skipped.
        ks: cut-offs.

    Returns:
        ``R@K`` (mean over queries of the share of relevant ids in the top K), ``hit@K``
        (some relevant id in the top K), ``MRR`` and ``n_queries``; the same definitions
        as ranx's ``recall@k``, ``hit_rate@k`` and ``mrr`` (checked in the tests).
    """
    if len(retrieved) != len(relevant):
        raise ValueError("retrieved and relevant must have the same length")
    queries = [(list(r), set(rel)) for r, rel in zip(retrieved, relevant, strict=True) if rel]
    if not queries:
        raise ValueError("no query has a relevant id")
    out: dict[str, float | int] = {}
    for k in ks:
        out[f"R@{k}"] = float(np.mean([len(rel & set(r[:k])) / len(rel) for r, rel in queries]))
        out[f"hit@{k}"] = float(np.mean([bool(rel & set(r[:k])) for r, rel in queries]))
    rr = [next((1.0 / (i + 1) for i, d in enumerate(r) if d in rel), 0.0) for r, rel in queries]
    return out | {"MRR": float(np.mean(rr)), "n_queries": len(queries)}
