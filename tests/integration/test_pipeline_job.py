"""The main job through `ray job submit` on the shared 3-node cluster.

Two runs, each a subset of the pipeline's stages:

- ``preprocess`` + ``text_sft``: synthetic datasets -> preprocess job, then the training
  smoke test: loss finite and falling, parameters changed, checkpoints written, and a
  (deliberately injected) worker failure resumed from the latest checkpoint by Ray Train's
  FailureConfig.
- ``preprocess`` + ``train_clip`` + ``index`` + ``search``: the tiny CLIP trained on the
  preprocessed pairs, cases indexed with *that* checkpoint and the knowledge corpus into
  Milvus, and searches answered from them.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from medray.models import weights_checksum

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _submit(*args: str) -> subprocess.CompletedProcess:
    cmd = [
        sys.executable, "-m", "medray.cli.main", "job", "submit", "--",
        "python", "-m", "jobs.pipeline", "--config", "jobs/configs/pipeline_tiny.yaml", *args,
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=os.environ)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    return res


def test_pipeline_uses_every_node_trains_and_resumes(ray_cluster, tiny_models, medray_home):
    run_name = "test-pipeline"
    res = _submit(
        f"run.name={run_name}", "stages=[preprocess,text_sft]",
        "text_sft.records.num_records=600", "text_sft.sft.optim.max_steps=12",
        "text_sft.sft.optim.save_steps=4", "text_sft.sft.fault.fail_at_step=7",
    )  # fmt: skip
    assert "injected failure at step 7" in res.stdout + res.stderr

    run_dir = medray_home / "runs" / run_name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["preprocess", "text_sft"]  # the subset, nothing else
    # one summary line per stage
    assert "=== MedRay pipeline summary ===" in res.stdout
    assert all(f"{name} " in res.stdout for name in summary["stages"])
    assert summary["cluster_nodes"] == 3
    # Synthetic datasets in real layouts through the preprocess job.
    pre = summary["stages"]["preprocess"]
    c = pre["counts"]
    assert c["in"] == c["written"] + c["quarantined"] + c["duplicates"] and c["written"] > 0
    assert set(pre["per_task"]) == {"report", "vqa", "mcq"}
    assert (Path(pre["output"]) / "_SUCCESS").is_file()
    assert summary["outputs"]["data"] == pre["output"]
    train = summary["stages"]["text_sft"]
    assert train["records"]["rows"] == 600
    assert len(train["records"]["rows_per_node"]) >= 2  # the Ray Data pass spread out
    assert len(set(train["worker_nodes"])) == 2  # SPREAD: one worker per node
    assert len(summary["nodes_used"]) == 3
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["loss_last"] < train["loss_first"] - 0.5
    assert train["steps"] == 12
    assert train["resumed_from_step"] == 4  # restarted from the step-4 checkpoint, not from 0

    final = Path(train["checkpoint"])
    assert (final / "medray_final.json").is_file() and (final / "model.safetensors").is_file()
    assert weights_checksum(final) != weights_checksum(
        tiny_models["tiny-lm"]
    )  # it learned something
    hf_checkpoints = [
        p for p in (run_dir / "text_sft").glob("checkpoint_*") if (p / "checkpoint").is_dir()
    ]
    assert hf_checkpoints, "intermediate HF checkpoints were reported to Ray Train"
    assert list(Path(train["records"]["parquet"]).glob("*.parquet"))


def test_pipeline_trains_clip_indexes_and_searches(ray_cluster, tiny_models, medray_home):
    from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings

    run_name = "test-pipeline-clip"
    res = _submit(
        f"run.name={run_name}", "stages=[search,train_clip,preprocess,index]",  # any order
        "preprocess.sources=[{kind: mimic-cxr, path: $MEDRAY_HOME/synth/pipeline-clip, synth_n: 160}]",
        "train_clip.clip.epochs=2", "train_clip.clip.batch_size=16",
        "index.milvus.cases_collection=cases_pipeline_test",
        "index.milvus.knowledge_collection=knowledge_pipeline_test",
        "search.text_queries=[pleural effusion]", "search.k=4",
    )  # fmt: skip
    summary = json.loads((medray_home / "runs" / run_name / "summary.json").read_text())
    assert list(summary["stages"]) == ["preprocess", "train_clip", "index", "search"]

    clip = summary["stages"]["train_clip"]
    assert len(clip["history"]) == 2 and len(set(clip["nodes_used"])) == 2
    assert Path(clip["best_model"]).is_relative_to(medray_home / "runs" / run_name / "train_clip")

    settings = MilvusSettings(
        uri=summary["outputs"]["milvus"]["uri"],
        cases_collection="cases_pipeline_test",
        knowledge_collection="knowledge_pipeline_test",
    )
    cases = CaseStore(settings)
    # The cases were embedded with the checkpoint this run trained, not the preset.
    assert cases.metadata()["clip_model"] == str(Path(clip["best_model"]).resolve())
    idx = summary["stages"]["index"]
    written = summary["stages"]["preprocess"]["per_task"]["report"]
    assert idx["cases"]["rows_indexed"] == written == cases.count()
    assert idx["knowledge"]["chunks"] == KnowledgeStore(settings).count() > 0

    queries = summary["stages"]["search"]["queries"]
    hits = queries["text->image: pleural effusion"]
    assert len(hits) == 4 and all(h["id"] and "labels" in h for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)
    know = queries["knowledge: how is a tension pneumothorax treated"]
    assert know and any("pneumothorax" in h["title"].lower() for h in know)
    assert "text->image: pleural effusion" in res.stdout  # printed, ids and scores only
