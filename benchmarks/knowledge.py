"""Knowledge retrieval quality: dense only, BM25 only and the hybrid (RRF), in one run.

    python benchmarks/knowledge.py                      # ../shared/data for PubMedQA
    python benchmarks/knowledge.py --shared /path/to/shared/data --port 19631

Two query sets, each against its own collection in a ``milvus-lite server`` started for the
run (the product's :class:`~medray.retrieval.store.KnowledgeStore`: dense all-MiniLM-L6-v2
vectors, Milvus's BM25 over the text, ``RRFRanker(60)`` for the hybrid):

- ``pubmedqa``: the 45 PubMedQA questions in ``../shared/data/pubmedqa`` against their
  own contexts; each context paragraph is one document, and every paragraph of a
  question's own abstract is relevant to it.
- ``knowledge``: ``benchmarks/knowledge_queries.jsonl``, questions written for this
  benchmark about the knowledge corpus (``datasets/knowledge``, chunked by the product's
  ``load_corpus``), each with the one (topic, section) chunk that answers it.

Metrics via ranx: ``hit_rate@k`` (a relevant document in the top k), ``recall@k`` (share of
the relevant documents in the top k) for k = 1, 5, 10, and ``ndcg@10``; one JSON line per
(set, method) plus one per method over both sets, and the hybrid's nDCG@10 against the best
single leg.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.retrieval import start_milvus
from medray.paths import repo_root
from medray.retrieval.connection import MilvusSettings
from medray.retrieval.store import KnowledgeStore

METRICS = [
    "hit_rate@1",
    "hit_rate@5",
    "hit_rate@10",
    "recall@1",
    "recall@5",
    "recall@10",
    "ndcg@10",
]
METHODS = ("dense", "bm25", "hybrid")
K = 10


def pubmedqa_set(shared: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """Documents (context paragraphs), queries and relevance of the PubMedQA sample."""
    data = json.loads((shared / "pubmedqa" / "data" / "ori_pqal.json").read_text(encoding="utf-8"))
    docs, queries, qrels = [], {}, {}
    for pmid, r in data.items():
        queries[f"pqa-{pmid}"] = r["QUESTION"]
        qrels[f"pqa-{pmid}"] = {}
        for i, (ctx, label) in enumerate(zip(r["CONTEXTS"], r["LABELS"], strict=True)):
            doc_id = f"{pmid}-{i}"
            docs.append(
                {"chunk_id": doc_id, "text": ctx, "title": f"PubMed {pmid}", "heading": label,
                 "source": "pubmedqa", "topic": pmid, "references": f"PMID {pmid}"}
            )  # fmt: skip
            qrels[f"pqa-{pmid}"][doc_id] = 1
    return docs, queries, qrels


def knowledge_set(path: Path) -> tuple[list[dict], dict[str, str], dict[str, dict[str, int]]]:
    """The knowledge corpus's chunks and the benchmark's questions about them."""
    from medray.retrieval.corpus import load_corpus

    chunks = load_corpus(repo_root() / "datasets" / "knowledge")
    docs = [c.to_row() for c in chunks]
    queries, qrels = {}, {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        q = json.loads(line)
        rel = {c.chunk_id: 1 for c in chunks if c.topic == q["topic"] and c.heading == q["heading"]}
        if not rel:
            raise ValueError(f"{path}:{n}: no chunk with topic {q['topic']!r} / {q['heading']!r}")
        queries[f"kq-{n:03d}"], qrels[f"kq-{n:03d}"] = q["query"], rel
    return docs, queries, qrels


def search_all(store: KnowledgeStore, queries: dict[str, str], vectors) -> dict[str, dict]:
    """Top-K runs ``{method: {qid: {doc_id: score}}}`` through the product's store."""
    ids, texts = list(queries), list(queries.values())
    runs: dict[str, dict] = {m: {} for m in METHODS}
    hybrid = store.hybrid_search_many(texts, [v.tolist() for v in vectors], k=K)
    for qid, text, vec, hyb in zip(ids, texts, vectors, hybrid, strict=True):
        legs = {
            "dense": store.dense_search(vec.tolist(), k=K),
            "bm25": store.keyword_search(text, k=K),
            "hybrid": hyb,
        }
        for m, hits in legs.items():
            # ranx sorts by score; ranks keep Milvus's order whatever the score scale.
            runs[m][qid] = {h.id: float(K - i) for i, h in enumerate(hits)} or {"none": 0.0}
    return runs


def evaluate(qrels: dict, run: dict) -> dict[str, float]:
    from ranx import Qrels, Run, evaluate

    scores = evaluate(Qrels(qrels), Run(run), METRICS, make_comparable=True)
    return {m: round(float(scores[m]), 4) for m in METRICS}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Dense vs BM25 vs hybrid retrieval quality.")
    ap.add_argument("--shared", type=Path, default=repo_root().parent / "shared" / "data")
    ap.add_argument(
        "--queries", type=Path, default=Path(__file__).with_name("knowledge_queries.jsonl")
    )
    ap.add_argument("--port", type=int, default=19631)
    args = ap.parse_args(argv)
    if not (args.shared / "pubmedqa").is_dir():
        print(f"no PubMedQA sample under {args.shared} (pass --shared)", file=sys.stderr)
        return 2
    from medray.models.encoders import TextEncoder

    encoder = TextEncoder("minilm-l6")
    sets = {"pubmedqa": pubmedqa_set(args.shared), "knowledge": knowledge_set(args.queries)}
    proc = start_milvus(Path(tempfile.mkdtemp(prefix="medray-bench-knowledge-")), args.port)
    all_qrels: dict = {}
    all_runs: dict = {m: {} for m in METHODS}
    try:
        for name, (docs, queries, qrels) in sets.items():
            settings = MilvusSettings(
                uri=f"http://127.0.0.1:{args.port}", knowledge_collection=f"kb_{name}"
            )
            store = KnowledgeStore(settings)
            store.create(encoder.dim, {"text_model": "minilm-l6"}, drop_existing=True)
            dense = encoder.encode([d["text"] for d in docs])
            store.upsert([{**d, "dense": v.tolist()} for d, v in zip(docs, dense, strict=True)])
            store.flush()
            runs = search_all(store, queries, encoder.encode(list(queries.values())))
            for m in METHODS:
                row = evaluate(qrels, runs[m])
                print(
                    json.dumps(
                        {
                            "set": name,
                            "method": m,
                            "queries": len(queries),
                            "documents": len(docs),
                            **row,
                        }
                    ),
                    flush=True,
                )
                all_runs[m].update(runs[m])
            all_qrels.update(qrels)
    finally:
        proc.kill()
        proc.wait()
    overall = {m: evaluate(all_qrels, all_runs[m]) for m in METHODS}
    for m in METHODS:
        print(
            json.dumps({"set": "both", "method": m, "queries": len(all_qrels), **overall[m]}),
            flush=True,
        )
    best_leg = max(("dense", "bm25"), key=lambda m: overall[m]["ndcg@10"])
    winner = max(METHODS, key=lambda m: (overall[m]["ndcg@10"], m == "hybrid"))
    print(json.dumps({
        "result": "hybrid_vs_best_leg", "best_single_leg": best_leg,
        "ndcg@10": {m: overall[m]["ndcg@10"] for m in METHODS},
        "hybrid_over_best_leg": round(overall["hybrid"]["ndcg@10"] / overall[best_leg]["ndcg@10"], 4),
        "winner": winner,
    }), flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
