"""The main job through `ray job submit` on the shared 3-node cluster.

Two runs, each a subset of the pipeline's stages (the reasoner SFT, GRPO, batch inference
and evaluation stages call jobs that their own tests cover; the stage plan is checked in
tests/unit/test_pipeline_plan.py):

- ``preprocess`` + ``summariser_sft``: synthetic datasets -> preprocess job, then the
  summariser SFT (jobs.train_sft) as the training smoke test: loss finite and falling, the
  adapter changed, checkpoints written, and a (deliberately injected) worker failure
  resumed from the latest checkpoint by Ray Train's FailureConfig.
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


def _lora_b_norm(adapter: Path) -> float:
    from safetensors.torch import load_file

    weights = load_file(str(adapter / "adapter_model.safetensors"))
    return sum(float(t.norm()) for k, t in weights.items() if "lora_B" in k)


def test_pipeline_uses_every_node_trains_and_resumes(ray_cluster, tiny_models, medray_home):
    run_name = "test-pipeline"
    res = _submit(
        f"run.name={run_name}", "stages=[summariser_sft,preprocess]",  # any order
        "summariser_sft.sft.optim.max_steps=12", "summariser_sft.sft.optim.save_steps=4",
        "summariser_sft.sft.fault.fail_at_step=7", "summariser_sft.data.limit_eval=8",
    )  # fmt: skip
    assert "injected failure at step 7" in res.stdout + res.stderr

    run_dir = medray_home / "runs" / run_name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert list(summary["stages"]) == ["preprocess", "summariser_sft"]  # the subset, nothing else
    # one summary line per stage
    assert "=== MedRay pipeline summary ===" in res.stdout
    assert all(f"{name} " in res.stdout for name in summary["stages"])
    assert summary["cluster_nodes"] == 3
    # Synthetic datasets in real layouts through the preprocess job.
    pre = summary["stages"]["preprocess"]
    c = pre["counts"]
    assert c["in"] == c["written"] + c["quarantined"] + c["duplicates"] and c["written"] > 0
    assert set(pre["per_task"]) == {"report", "vqa", "mcq"}
    assert {"mimic-cxr", "vqa-rad", "slake", "medmcqa"} <= set(pre["generated_sources"])
    assert (Path(pre["output"]) / "_SUCCESS").is_file()
    assert summary["outputs"]["data"] == pre["output"]
    # The summariser SFT (jobs.train_sft, task summariser) on the preprocessed report rows.
    train = summary["stages"]["summariser_sft"]
    assert train["rows"]["train"]["usable"] == 96  # limit_train of pipeline_tiny.yaml
    assert len({w["node_id"] for w in train["workers"]}) == 2  # SPREAD: one worker per node
    assert len(summary["nodes_used"]) == 3
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["loss_last"] < train["loss_first"] - 0.2
    assert train["steps"] == 12
    assert train["resumed_from_step"] == 4  # restarted from the step-4 checkpoint, not from 0
    assert train["eval"]["n"] == 8 and train["eval"]["rougeL"] is not None

    final = Path(train["final_model"])
    assert final.is_relative_to(run_dir / "summariser_sft")
    assert summary["outputs"]["summariser"] == str(final)
    assert (final / "medray_final.json").is_file() and (final / "adapter_config.json").is_file()
    assert _lora_b_norm(final) > 0  # LoRA B starts at zero: the adapter learned something
    hf_checkpoints = [
        p for p in (run_dir / "summariser_sft").glob("checkpoint_*") if (p / "checkpoint").is_dir()
    ]
    assert hf_checkpoints, "intermediate HF checkpoints were reported to Ray Train"


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
