"""The agent stage of ``/v1/analyze`` in process: LLM calls, revision cycles and wall time.

The agent as the single-process baseline runs it (``serve_apps.backend.LocalBackend`` with
its agent): the tiny reasoner as its LLM (``agent.max_new_tokens`` 48, as in
``serve_apps/configs/local.yaml``), the real guard, and hybrid search over the shipped
knowledge corpus embedded by all-MiniLM-L6-v2 into a Milvus Lite file made here. Three
inputs, alternating, ``--repeats`` runs each:

- ``candidate``: parsed image reasoning that states a diagnosis (the agent may revise up to
  ``max_cycles`` while its confidence is below the threshold) - the baseline;
- ``no_candidate``: parsed reasoning that states nothing diagnostic;
- ``unparsed``: the reasoner's output did not parse (what the tiny reasoner of the serve
  benchmark always writes).

Without a candidate the answer names no diagnosis at confidence 0 whatever is retrieved,
so the agent does not revise (``medray.agent.honesty.has_candidate``). Prints one JSON line
per input (median wall time, LLM calls, cycles) and the ratios to the baseline.

    python -m benchmarks.agent_stage                 # ~2 minutes on 2 cores
    python -m benchmarks.agent_stage --repeats 1     # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

STATED = {"caption": "Chest radiograph.", "reasoning": ["Cardiomegaly."], "answer": "yes"}
NOTHING = {"caption": "", "reasoning": [], "answer": "..."}
QUESTION = "Is there cardiomegaly?"


def inputs() -> dict[str, Any]:
    from medray.agent import AgentInput

    return {
        "candidate": AgentInput(QUESTION, json.dumps(STATED), STATED, "cardiomegaly"),
        "no_candidate": AgentInput(QUESTION, json.dumps(NOTHING), NOTHING, ""),
        "unparsed": AgentInput(QUESTION, '{"caption": "ch ~~', None, "", reasoning_ok=False),
    }


def backend(folder: Path, max_new_tokens: int):
    """A LocalBackend with the tiny reasoner and its agent, over a fresh knowledge index."""
    from medray.agent import AgentSettings
    from medray.paths import repo_root
    from medray.retrieval import KnowledgeStore, MilvusSettings, load_corpus
    from medray.safety import SafetyPolicy
    from medray.serving.embedder import Embedder
    from medray.serving.guard import Guard
    from medray.serving.reasoner import Reasoner
    from medray.serving.retriever import Retriever
    from serve_apps.backend import LocalBackend

    emb = Embedder("tiny-clip", "minilm-l6")
    rows = [c.to_row() for c in load_corpus(repo_root() / "datasets" / "knowledge")]
    dense = emb.texts([r["text"] for r in rows])
    s = MilvusSettings(
        uri=str(folder / "agent.db"),
        knowledge_collection="kb",
        cases_collection="no_cases",
        timeout_s=60,
    )
    kb = KnowledgeStore(s)
    kb.create(dense.shape[1], {"text_model": "minilm-l6"}, drop_existing=True)
    kb.upsert([{**r, "dense": dense[i].tolist()} for i, r in enumerate(rows)])
    kb.flush()
    return LocalBackend(
        Guard(SafetyPolicy(embedder="")),
        Reasoner("tiny-qwen2-vl"),
        None,
        emb,
        Retriever(s, text_model="minilm-l6"),
        agent=AgentSettings(max_new_tokens=max_new_tokens),
    )


async def one_run(agent, inp) -> dict[str, Any]:
    t0 = time.perf_counter()
    final = await agent.run(inp)
    ms = (time.perf_counter() - t0) * 1000
    calls = sum(1 for t in final["trace"] if t.get("llm"))
    return {"ms": ms, "llm_calls": calls, "cycles": final["cycles"], "status": final["status"]}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="runs per input (medians)")
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args(argv)
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    with tempfile.TemporaryDirectory(prefix="medray-agent-bench-") as tmp:
        agent = backend(Path(tmp), args.max_new_tokens)._agent
        cases = inputs()
        runs: dict[str, list[dict[str, Any]]] = {k: [] for k in cases}
        asyncio.run(one_run(agent, cases["candidate"]))  # warm-up (model, index load)
        for _ in range(args.repeats):
            for name, inp in cases.items():
                runs[name].append(asyncio.run(one_run(agent, inp)))
    out: dict[str, Any] = {}
    for name, rs in runs.items():
        line = {
            "bench": "agent_stage",
            "input": name,
            "repeats": len(rs),
            "median_ms": round(statistics.median(r["ms"] for r in rs), 1),
            "llm_calls": sorted({r["llm_calls"] for r in rs}),
            "cycles": sorted({r["cycles"] for r in rs}),
            "status": sorted({r["status"] for r in rs}),
        }
        print(json.dumps(line))
        out[name] = line
    base = out["candidate"]["median_ms"]
    summary = {
        "bench": "agent_stage_summary",
        **{f"{k}_over_candidate": round(v["median_ms"] / base, 3) for k, v in out.items()},
    }
    print(json.dumps(summary))
    return {"runs": out, "summary": summary}


if __name__ == "__main__":
    main()
