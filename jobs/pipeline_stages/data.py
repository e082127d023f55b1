"""Data and retrieval stages: preprocess, train_clip, index, search."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from jobs.pipeline_stages.context import Context


@dataclass(frozen=True)
class SearchStageConfig:
    """Queries run against the indexed collections; the top hits are printed (ids, scores,
    labels or titles only)."""

    k: int = 3
    text_queries: tuple[str, ...] = ("pleural effusion", "enlarged cardiac silhouette")
    knowledge_queries: tuple[str, ...] = ("how is a tension pneumothorax treated",)


def stage_preprocess(ctx: Context) -> dict[str, Any]:
    """Synthetic datasets in their real layouts (generated on first use) -> ``jobs.preprocess``."""
    from jobs import preprocess

    pre_cfg = ctx.cfg.preprocess
    if not pre_cfg.output:
        pre_cfg = dataclasses.replace(pre_cfg, output=str(ctx.out_dir / "data"))
    pre = preprocess.run(pre_cfg)
    preprocess.print_summary(pre)
    ctx.outputs["data"] = pre["output"]
    c = pre["counts"]
    splits = ", ".join(f"{k} {v}" for k, v in sorted(pre["per_split"].items()))
    return {
        "output": pre["output"],
        "counts": c,
        "per_split": pre["per_split"],
        "per_task": pre["per_task"],
        "generated_sources": pre["generated_sources"],
        "nodes_used": pre["nodes_used"],
        "seconds": pre["seconds"]["total"],
        "line": f"{c['in']} records -> {c['written']} rows ({splits}), {c['quarantined']} "
        f"quarantined, {c['duplicates']} duplicates, on {len(pre['nodes_used'])} nodes "
        f"-> {pre['output']}",
    }


def stage_train_clip(ctx: Context) -> dict[str, Any]:
    """``jobs.train_clip`` on the preprocessed image-report pairs: zero-shot vs fine-tuned."""
    from jobs import train_clip

    sub = ctx.training_config("train_clip")
    s = train_clip.main(sub)
    ctx.outputs["clip_model"] = s["best_model"]
    zs, ft = s["zero_shot"], s["fine_tuned"]
    return {
        "best_model": s["best_model"],
        "epochs": s["epochs"],
        "history": s["history"],
        "resumed_at_epochs": s["resumed_at_epochs"],
        "zero_shot": zs,
        "fine_tuned": ft,
        "workers": s["workers"],
        "nodes_used": sorted({w["node_id"] for w in s["workers"]}),
        "seconds": s["seconds"],
        "line": f"{sub.clip.model} x{sub.scaling.num_workers} workers "
        f"(ZeRO-{sub.clip.deepspeed.zero_stage}), {s['epochs']} epochs; test image->text R@1 "
        f"{zs['i2t_R@1']:.3f} zero-shot -> {ft['i2t_R@1']:.3f} fine-tuned, R@5 "
        f"{zs['i2t_R@5']:.3f} -> {ft['i2t_R@5']:.3f} ({ft['n_images']} images)",
    }


def stage_index(ctx: Context) -> dict[str, Any]:
    """``jobs.index``: cases (with the CLIP just trained, if any) + knowledge into Milvus."""
    from jobs import index

    sub = ctx.cfg.index
    cases = sub.cases
    if cases.enabled:
        cases = dataclasses.replace(
            cases,
            input=ctx.need("index", "data"),
            clip_model=ctx.outputs.get("clip_model", cases.clip_model),
        )
    sub = dataclasses.replace(sub, run=ctx.sub_run(sub.run, "index"), cases=cases)
    s = index.main(sub)
    ctx.outputs["milvus"] = dataclasses.replace(sub.milvus, uri=s["milvus_uri"])
    parts = []
    if "cases" in s:
        c = s["cases"]
        parts.append(
            f"{c['rows_indexed']} cases into {c['collection']!r} ({c['error_count']} unreadable), "
            f"first query {c['first_query_s'] * 1000:.0f} ms, steady {c['steady_query_s'] * 1000:.0f} ms"
        )
    if "knowledge" in s:
        k = s["knowledge"]
        parts.append(f"{k['chunks']} knowledge chunks into {k['collection']!r}")
    return {
        "milvus_uri": s["milvus_uri"],
        "cases": s.get("cases"),
        "knowledge": s.get("knowledge"),
        "seconds": s["seconds"],
        "line": "; ".join(parts) + f" at {s['milvus_uri']}",
    }


def stage_search(ctx: Context) -> dict[str, Any]:
    """Text->image and knowledge searches against the indexed collections."""
    from medray.retrieval.search import Searcher

    sc = ctx.cfg.search
    settings = ctx.outputs.get("milvus") or ctx.cfg.index.milvus
    searcher = Searcher(settings)
    t = time.perf_counter()
    results: dict[str, list[dict[str, Any]]] = {}
    print("\n=== MedRay search ===")
    for q in sc.text_queries:
        hits = searcher.text_to_image(q, k=sc.k)
        results[f"text->image: {q}"] = [
            {"id": h.id, "score": round(h.score, 4), "labels": list(h.payload.get("labels") or [])}
            for h in hits
        ]
    for q in sc.knowledge_queries:
        hits = searcher.search_knowledge(q, k=sc.k)
        results[f"knowledge: {q}"] = [
            {"id": h.id, "score": round(h.score, 4), "title": h.payload.get("title", "")}
            for h in hits
        ]
    for query, hits in results.items():
        print(f"{query}")
        for rank, h in enumerate(hits, 1):
            what = ", ".join(h["labels"]) or "no finding" if "labels" in h else h["title"]
            print(f"  {rank}. {h['score']:.4f}  {h['id']}  [{what}]")
    n = sum(len(v) for v in results.values())
    return {
        "queries": results,
        "seconds": round(time.perf_counter() - t, 1),
        "line": f"{len(sc.text_queries)} text->image + {len(sc.knowledge_queries)} knowledge "
        f"queries, {n} hits (top hits above and in summary.json)",
    }
