"""benchmarks/knowledge.py: its query sets resolve to real documents, and its ranx metrics
match a hand-computed fixture."""

from __future__ import annotations

import math

import pytest

from benchmarks.knowledge import evaluate, knowledge_set, pubmedqa_set
from medray.paths import repo_root

pytestmark = pytest.mark.unit

SHARED = repo_root().parent / "shared" / "data"
QUERIES = repo_root() / "benchmarks" / "knowledge_queries.jsonl"


def test_every_knowledge_query_has_exactly_one_answering_chunk():
    docs, queries, qrels = knowledge_set(QUERIES)
    ids = {d["chunk_id"] for d in docs}
    assert len(queries) == 44 and set(queries) == set(qrels)
    assert all(len(rel) == 1 and set(rel) <= ids for rel in qrels.values())
    # Every chunk of the corpus is asked about once.
    assert {next(iter(r)) for r in qrels.values()} == ids


def test_a_query_naming_a_missing_section_is_refused(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"query": "q", "topic": "pneumothorax", "heading": "Nope"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:1: no chunk with topic 'pneumothorax'"):
        knowledge_set(bad)


@pytest.mark.skipif(not (SHARED / "pubmedqa").is_dir(), reason="needs ../shared/data")
def test_pubmedqa_questions_are_relevant_to_their_own_paragraphs():
    docs, queries, qrels = pubmedqa_set(SHARED)
    assert len(queries) == 45 and len(docs) == sum(len(r) for r in qrels.values())
    for qid, rel in qrels.items():
        assert all(d.split("-")[0] == qid.removeprefix("pqa-") for d in rel)


def test_metrics_match_a_hand_computed_fixture():
    qrels = {"q1": {"a": 1}, "q2": {"b": 1, "c": 1}}
    run = {"q1": {"x": 2.0, "a": 1.0}, "q2": {"b": 3.0, "y": 2.0, "c": 1.0}}
    m = evaluate(qrels, run)
    assert m["hit_rate@1"] == 0.5 and m["hit_rate@5"] == 1.0
    assert m["recall@1"] == pytest.approx((0 + 0.5) / 2) and m["recall@5"] == 1.0
    ndcg_q1 = (1 / math.log2(3)) / 1
    ndcg_q2 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert m["ndcg@10"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2, abs=1e-4)
