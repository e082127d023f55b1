"""``benchmarks/gpu_models.py`` at tiny size on the CPU, so it does not rot between lent GPUs.

It runs in a subprocess with Ray, trl, DeepSpeed and pymilvus made unimportable, as on the
GPU machine (which has none of them). No Ray cluster is started.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
BLOCKED = ("ray", "trl", "deepspeed", "pymilvus")
RUN = (
    "import runpy, sys\n"
    "for name in {blocked!r}:\n"
    "    sys.modules[name] = None  # import fails, find_spec says 'not installed'\n"
    "sys.argv = ['gpu_models', *{argv!r}]\n"
    "runpy.run_module('benchmarks.gpu_models', run_name='__main__', alter_sys=True)\n"
)


def _run(argv: list[str]) -> subprocess.CompletedProcess:
    code = RUN.format(blocked=BLOCKED, argv=argv)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True
    )


def test_gpu_benchmark_runs_at_tiny_size_without_ray(tmp_path):
    out = tmp_path / "tiny.jsonl"
    args = ["--tiny", "--device", "cpu", "--latency-requests", "2", "--clip-batch", "4"]
    proc = _run([*args, "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [r for r in rows if r["bench"] == "error"]
    by = {}
    for r in rows:
        by.setdefault(r["bench"], []).append(r)
    assert {r["section"] for r in by["section"]} == {"reasoner", "sft", "summariser", "clip"}

    stream = {
        (r["variant"], r["batch"]): r for r in by["reasoner"] if r["path"] == "serve_stream_many"
    }
    assert set(stream) == {(v, b) for v in ("plain", "lora") for b in (1, 2)} | {
        ("plain_adapter_loaded", 1)
    }
    for r in stream.values():
        assert r["new_tokens"] == 8 and r["prompt_tokens"] > 0
        assert 0 < r["ttft_ms"] <= r["e2e_ms"]
        assert r["tok_s_total"] == pytest.approx(r["batch"] * r["tok_s_per_seq"])
        assert 0 < r["decode_frac_of_limit"] < 1 and r["limit_b1_tok_s_nominal"] > 0
    paths = {r["path"] for r in by["reasoner"]}
    assert {"hf_generate_bare", "batch_infer_generate_scored"} <= paths
    (lat,) = by["reasoner_latency"]
    assert lat["requests"] == 2 and 0 < lat["p50_ms"] <= lat["p95_ms"]
    (ratios,) = by["ratios"]
    assert {"b2_over_b1_tok_s_total", "lora_over_plain_tok_s_b2"} <= set(ratios)
    (sft,) = by["sft_lora_step"]
    assert sft["batch"] == 4 and sft["samples_s"] > 0 and math.isfinite(sft["loss"])
    assert 0 < sft["trainable_params"] < 10**6  # LoRA + the config's saved vision tower
    (summary,) = by["summariser"]
    assert summary["new_tokens"] > 0 and summary["tok_s"] > 0
    assert by["clip_images"][0]["per_s_end_to_end"] > 0 < by["clip_texts"][0]["per_s_model_fp32"]

    cmp = _run(["--compare", str(out), str(out)])
    assert cmp.returncode == 0, cmp.stderr[-2000:]
    ratio_rows = [json.loads(line) for line in cmp.stdout.splitlines() if line.startswith("{")]
    assert ratio_rows and all(
        v == pytest.approx(1.0) for r in ratio_rows for k, v in r.items() if k.endswith("_before")
    )


def test_gpu_benchmark_rejects_unknown_sections():
    proc = _run(["--tiny", "--sections", "reasoner,warp-drive"])
    assert proc.returncode == 2 and "unknown sections ['warp-drive']" in proc.stderr
