"""benchmarks/serve.py: both sides get runs of equal length, repeats alternate who goes
first, and the summary's ratios are ratios of the medians (hand-computed fixture)."""

from __future__ import annotations

import argparse

import pytest

import benchmarks.serve as serve

pytestmark = pytest.mark.unit


def _run(rps: float, p50: float, errors: int = 0) -> dict:
    return {"throughput_rps": rps, "p50_ms": p50, "p95_ms": 2 * p50, "errors": errors}


def test_equal_lengths_and_alternating_order(monkeypatch):
    calls = []

    async def fake_load(url, endpoint, c, duration, max_new):  # the HTTP boundary
        calls.append((url, endpoint, c, duration))
        return _run(1.0, 10.0)

    monkeypatch.setattr(serve, "run_load", fake_load)
    monkeypatch.setattr(serve, "emit", lambda record: None)
    ns = argparse.Namespace(repeats=3, soak=60.0, duration=20.0, max_new_tokens=8)
    out = serve.compare_http({"baseline": "b", "graph": "g"}, ["analyze", "chat"], [1, 32], ns)
    assert {len(v) for v in out.values()} == {3}
    for endpoint, c in (("analyze", 1), ("analyze", 32), ("chat", 1), ("chat", 32)):
        mine = [x for x in calls if x[1:3] == (endpoint, c)]
        assert len(mine) == 6
        # every run of one load point is equally long, on both sides
        want = 60.0 if (endpoint, c) == ("analyze", 32) else 20.0
        assert {x[3] for x in mine} == {want}
        firsts = [mine[i][0] for i in range(0, 6, 2)]
        assert firsts in (["b", "g", "b"], ["g", "b", "g"])


def test_summary_is_the_ratio_of_medians():
    results = {
        ("analyze", 1, "graph"): [_run(1.0, 100.0), _run(1.0, 300.0), _run(1.0, 200.0)],
        ("analyze", 1, "baseline"): [_run(1.0, 100.0), _run(1.0, 100.0), _run(1.0, 400.0)],
        ("analyze", 32, "graph"): [_run(2.0, 9.0), _run(6.0, 9.0), _run(4.0, 9.0, errors=2)],
        ("analyze", 32, "baseline"): [_run(1.0, 9.0), _run(2.0, 9.0), _run(8.0, 9.0)],
    }
    s = serve.http_summary(results, ["analyze"], [1, 32])
    assert s["analyze_c1_p50_ratio"] == 2.0  # median 200 / median 100
    assert s["analyze_c1_p50_ratio_per_repeat"] == [1.0, 3.0, 0.5]
    assert s["analyze_c32_throughput_ratio"] == 2.0  # median 4 / median 2
    assert s["analyze_c32_graph_errors"] == 2
    assert s["medians"]["analyze_c32_baseline"]["throughput_rps"] == 2.0
    assert s["medians"]["analyze_c32_graph"]["runs"] == 3
