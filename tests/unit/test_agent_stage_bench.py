"""benchmarks/agent_stage.py runs end to end (one repeat) and measures what it says: the
agent with the tiny reasoner revises only when the image's reasoning gave a candidate."""

from __future__ import annotations

import pytest

from benchmarks.agent_stage import main

pytestmark = pytest.mark.unit


def test_agent_stage_benchmark_smoke():
    out = main(["--repeats", "1"])
    runs = out["runs"]
    assert set(runs) == {"candidate", "no_candidate", "unparsed"}
    assert all(r["median_ms"] > 0 and r["repeats"] == 1 for r in runs.values())
    for name in ("no_candidate", "unparsed"):
        assert runs[name]["llm_calls"] == [4] and runs[name]["cycles"] == [0]
        assert runs[name]["status"] == ["insufficient_evidence"]
    # The tiny reasoner's agent output is unreadable, so the candidate's confidence is the
    # grounding score; whatever it is, the LLM calls follow the cycles (4 + 3 per cycle).
    c = runs["candidate"]
    assert c["llm_calls"] == [4 + 3 * c["cycles"][0]]
    assert out["summary"]["candidate_over_candidate"] == 1.0
