"""The main job through `ray job submit` on the shared 3-node cluster.

Two runs, each a subset of the pipeline's stages (the GRPO, medical-QA and evaluation
stages call jobs that their own tests cover; the stage plan is checked in
tests/unit/test_pipeline_plan.py):

- ``preprocess`` + ``train_clip`` + ``index`` + ``search``: the tiny CLIP trained on the
  preprocessed pairs by two workers under ZeRO-2, one of them SIGKILLed mid-run (the stage
  resumes from its checkpoint), cases indexed with *that* checkpoint and the knowledge
  corpus into Milvus, and searches answered from them.
- ``preprocess`` + ``sft_reasoner`` + ``summariser_sft`` + ``batch_infer`` + ``serve``:
  three synthetic datasets (MIMIC-CXR, VQA-RAD, MedMCQA) through the preprocess job on
  every node; the reasoner SFT under ZeRO-3 with one worker SIGKILLed once a checkpoint is
  registered (resumed from it, evaluated, its adapter loads and merges with peft); the
  summariser SFT as the training smoke test (loss finite and falling, checkpoints written,
  a deliberately injected worker failure resumed from the latest checkpoint by Ray Train's
  FailureConfig); then the pipeline serves what it trained, and
  every path gives the same answer for the same held-out row: batch inference's greedy
  answer == ``/v1/chat/completions`` with the adapter's model name == ``/v1/analyze``'s
  ``reasoning`` event, and the served summariser's output == the SFT evaluation's output
  for the same input (so any drift of a prompt, parser or generation setting between
  training, batch inference and serving fails it).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
from worker_kill import submit_and_kill_a_worker

from medray.serving.sse import read_events

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


SERVE_PORT = 8050 + int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))  # test_serve_app's


PIPELINE = ["python", "-m", "jobs.pipeline", "--config", "jobs/configs/pipeline_tiny.yaml"]


def _check_resumed_zero3_reasoner(summary: dict) -> None:
    """The reasoner SFT under ZeRO-3 that lost a SIGKILLed worker: resumed from a registered
    checkpoint (ZeRO-3's partitioned state is the harder one to save and restore), and its
    final checkpoint a peft adapter that loads, changes the model and merges."""
    import torch
    from peft import PeftModel

    from medray.models.loading import load_vlm

    s = summary["stages"]["sft_reasoner"]
    assert s["steps"] == 10 and len(s["workers"]) == 2
    assert s["resumed_from_step"] >= 2, "training did not resume from a checkpoint"
    assert len({w["train_order"] for w in s["workers"]}) == 1  # one row order on both ranks
    assert math.isfinite(s["loss_last"]) and s["loss_last"] < s["loss_first"]
    ev = s["eval"]  # the job's own held-out evaluation (batch_infer scores it again)
    assert ev["n"] == 4 and 0.0 <= ev["json_validity"] <= 1.0
    assert "closed_accuracy" in ev and "closed_majority_rate" in ev

    base, _ = load_vlm("tiny-qwen2-vl")
    before = {k: v.clone() for k, v in base.state_dict().items()}
    merged = PeftModel.from_pretrained(base, s["final_model"]).merge_and_unload()
    after = merged.state_dict()
    changed = [k for k in before if k in after and not torch.equal(before[k], after[k])]
    assert any("visual" in k for k in changed), "the vision tower (modules_to_save) was not saved"
    assert any("q_proj" in k for k in changed), "the LoRA deltas were not merged"


def _check_preprocess_and_resumed_summariser(summary: dict, out: str, run_dir: Path) -> None:
    """The preprocess stage's counts and the summariser SFT that lost a worker and resumed."""
    # one summary line per stage
    assert "=== MedRay pipeline summary ===" in out
    assert all(f"{name} " in out for name in summary["stages"])
    assert summary["cluster_nodes"] == 3
    # Synthetic datasets in real layouts through the preprocess job.
    pre = summary["stages"]["preprocess"]
    c = pre["counts"]
    assert c["in"] == c["written"] + c["quarantined"] + c["duplicates"] and c["written"] > 0
    assert set(pre["per_task"]) == {"report", "vqa", "mcq"}
    assert {"mimic-cxr", "vqa-rad", "medmcqa"} <= set(pre["generated_sources"])
    assert (Path(pre["output"]) / "_SUCCESS").is_file()
    assert summary["outputs"]["data"] == pre["output"]
    # The summariser SFT (jobs.train_sft, task summariser) on the preprocessed report rows.
    train = summary["stages"]["summariser_sft"]
    assert "injected failure at step 7" in out
    assert train["rows"]["train"]["usable"] == 96  # limit_train
    assert len({w["node_id"] for w in train["workers"]}) == 2  # SPREAD: one worker per node
    # Both ranks hold the preprocessed rows (many Parquet files) in the same order, which
    # accelerate's positional sharding needs (test_train_data_order.py).
    assert len({w["train_order"] for w in train["workers"]}) == 1, train["workers"]
    assert len(summary["nodes_used"]) == 3
    assert math.isfinite(train["loss_first"]) and math.isfinite(train["loss_last"])
    assert train["loss_last"] < train["loss_first"] - 0.2
    assert train["steps"] == 12
    assert train["resumed_from_step"] == 4  # restarted from the step-4 checkpoint, not from 0
    assert train["eval"]["n"] == 3 and train["eval"]["rougeL"] is not None  # limit_eval

    final = Path(train["final_model"])
    assert final.is_relative_to(run_dir / "summariser_sft")
    assert summary["outputs"]["summariser"] == str(final)
    assert (final / "medray_final.json").is_file()
    hf_checkpoints = [
        p for p in (run_dir / "summariser_sft").glob("checkpoint_*") if (p / "checkpoint").is_dir()
    ]
    assert hf_checkpoints, "intermediate HF checkpoints were reported to Ray Train"


def test_pipeline_trains_clip_indexes_and_searches(ray_cluster, tiny_models, medray_home):
    from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings

    run_name = "test-pipeline-clip"
    epochs = 6
    # One CLIP worker is SIGKILLed once a checkpoint is registered (tests/integration/worker_kill.py):
    # the stage restarts, resumes from that checkpoint, and the index stage embeds with its result.
    rc, out = submit_and_kill_a_worker(
        [*PIPELINE, f"run.name={run_name}", "run.max_failures=2",
         "stages=[search,train_clip,preprocess,index]",  # any order
         "preprocess.sources=[{kind: mimic-cxr, path: $MEDRAY_HOME/synth/pipeline-clip, synth_n: 160}]",
         f"train_clip.clip.epochs={epochs}", "train_clip.clip.batch_size=16",
         "train_clip.clip.deepspeed.zero_stage=2",
         "index.milvus.cases_collection=cases_pipeline_test",
         "index.milvus.knowledge_collection=knowledge_pipeline_test",
         "search.text_queries=[pleural effusion]", "search.k=4"],
        medray_home / "runs" / run_name / "train_clip",
        max_reports=epochs - 2,
    )  # fmt: skip
    assert rc == 0, out[-8000:]
    summary = json.loads((medray_home / "runs" / run_name / "summary.json").read_text())
    assert list(summary["stages"]) == ["preprocess", "train_clip", "index", "search"]

    clip = summary["stages"]["train_clip"]
    assert clip["resumed_at_epochs"], "training did not resume from a checkpoint"
    assert [h["epoch"] for h in clip["history"]] == list(range(epochs))
    assert len(set(clip["nodes_used"])) == 2  # SPREAD over two nodes
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
    assert "text->image: pleural effusion" in out  # printed, ids and scores only


def _sse(resp) -> dict[str, dict]:
    return dict(read_events(resp.iter_lines()))  # the last event of each kind


def test_pipeline_serves_what_it_trains_and_every_path_answers_alike(
    ray_cluster, tiny_models, medray_home
):
    import base64

    import httpx
    from ray import serve

    from medray.contracts import summariser as summariser_contract
    from medray.data.output import read_table
    from medray.eval.predictions import read_predictions
    from medray.serving.deploy import remove

    run_name = "test-pipeline-serve"
    run_dir = medray_home / "runs" / run_name
    tokens = 24
    # One run for what were three (the pipeline serving its models, a ZeRO-3 reasoner SFT
    # with a killed worker, a summariser SFT with a failure): the reasoner loses one of its
    # two ZeRO-3 workers (SIGKILL, once a checkpoint is registered) and resumes; the
    # summariser raises at step 7 and resumes from the step-4 checkpoint.
    rc, out = submit_and_kill_a_worker(
        [*PIPELINE,
        f"run.name={run_name}", "run.max_failures=2",
        "stages=[preprocess,sft_reasoner,summariser_sft,batch_infer,serve]",
        "preprocess.sources=[" + ", ".join(
            f"{{kind: {k}, path: $MEDRAY_HOME/synth/pipeline-serve/{k}, synth_n: {n}}}"
            for k, n in (("mimic-cxr", 160), ("vqa-rad", 40), ("medmcqa", 40))
        ) + "]",
        "sft_reasoner.sft.optim.max_steps=10", "sft_reasoner.sft.optim.save_steps=2",
        "sft_reasoner.sft.optim.logging_steps=2",
        "sft_reasoner.sft.deepspeed.zero_stage=3", "sft_reasoner.data.limit_train=24",
        "sft_reasoner.eval.enabled=true", "sft_reasoner.data.limit_eval=4",
        "summariser_sft.sft.optim.max_steps=12", "summariser_sft.sft.optim.save_steps=4",
        "summariser_sft.sft.fault.fail_at_step=7", "summariser_sft.sft.optim.logging_steps=3",
        "summariser_sft.data.limit_train=96", "summariser_sft.data.limit_eval=3",
        "batch_infer.input.limit=3", "batch_infer.counterfactual.enabled=false",
        "batch_infer.counterfactual.blank_control=false",
        f"batch_infer.generation.max_new_tokens={tokens}",
        f"serve.port={SERVE_PORT}",
        "serve.overrides=[retrieval.enabled=false, agent.enabled=false, "
        f"generation.max_new_tokens={tokens}]"],
        run_dir / "sft_reasoner",
        max_reports=3,
    )  # fmt: skip
    at = out.rfind("Traceback (most recent call last)")
    assert rc == 0, out[at : at + 8000] if at >= 0 else out[-8000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    base_url = f"http://127.0.0.1:{SERVE_PORT}"
    try:
        assert list(summary["stages"]) == [
            "preprocess", "sft_reasoner", "summariser_sft", "batch_infer", "serve"
        ]  # fmt: skip
        _check_preprocess_and_resumed_summariser(summary, out, run_dir)
        _check_resumed_zero3_reasoner(summary)
        served = summary["stages"]["serve"]
        assert served["deployed"] and served["url"] == base_url
        sft_adapter = summary["outputs"]["reasoner_sft"]
        assert f"adapter reasoner-sft: {sft_adapter}" in served["served"]
        assert f"summariser: {summary['outputs']['summariser']}" in served["served"]
        assert "[stage 5/5] serve " in out  # one line as each stage ends
        models = httpx.get(f"{base_url}/v1/models", timeout=60).json()["data"]
        listed = [m["id"] for m in models]
        assert listed[:2] == ["medray-reasoner", "reasoner-sft"]  # (then the MedQA model)
        assert "reasoner-grpo" not in listed  # no GRPO stage in this run

        # The reasoner: the same held-out rows through batch inference and both endpoints.
        preds = read_predictions(summary["stages"]["batch_infer"]["predictions"]["sft"]).table
        preds = {r["sample_id"]: r for r in preds.to_pylist()}
        data = read_table(
            summary["outputs"]["data"], "test", columns=["sample_id", "question", "image"]
        )
        rows = [r for r in data.to_pylist() if r["sample_id"] in preds]
        assert len(rows) == len(preds) == 3
        with httpx.Client(base_url=base_url, timeout=300) as client:
            for row in rows:
                expected = preds[row["sample_id"]]["raw_text"]
                assert expected, row["sample_id"]
                image = base64.b64encode(row["image"]).decode()
                chat = client.post(
                    "/v1/chat/completions",
                    json={
                        "model": "reasoner-sft",
                        "temperature": 0,
                        "max_tokens": tokens,
                        "messages": [
                            {
                                "role": "user",
                                "content": [
                                    {
                                        "type": "image_url",
                                        "image_url": {"url": f"data:image/png;base64,{image}"},
                                    },
                                    {"type": "text", "text": row["question"]},
                                ],
                            }
                        ],
                    },
                )
                assert chat.status_code == 200, chat.text
                assert chat.json()["choices"][0]["message"]["content"] == expected
                body = {"image": image, "question": row["question"], "model": "reasoner-sft",
                        "max_new_tokens": tokens, "temperature": 0.0, "agent": False}  # fmt: skip
                with client.stream("POST", "/v1/analyze", json=body) as resp:
                    assert resp.status_code == 200
                    events = _sse(resp)
                assert events["reasoning"]["text"] == expected

        # The summariser: the SFT evaluation's held-out outputs, served.
        ev_rows = [
            json.loads(x)
            for x in Path(summary["stages"]["summariser_sft"]["eval"]["rows_file"])
            .read_text()
            .splitlines()
        ]
        assert len(ev_rows) == 3
        handle = serve.get_deployment_handle("Summariser", app_name="medray")
        for r in ev_rows:
            steps = summariser_contract.steps_from_findings(r["findings"])
            out = handle.summarise.remote("", steps, "").result(timeout_s=120)
            assert out["summary"] == r["raw_text"].strip(), r["sample_id"]
        # ... and batch inference of the trained summariser (its held-out rows by sample id)
        # generates what the served one does, with a log-likelihood per row.
        text = summary["stages"]["batch_infer"]["text_models"]
        assert list(text) == ["summariser"]  # no medqa_sft stage in this run
        batch = read_predictions(text["summariser"]["predictions"]["sft"]).table.to_pylist()
        assert len(batch) == 3 and all(b["error"] == "" and b["n_tokens"] > 0 for b in batch)
        findings = {
            r["sample_id"]: r["findings"]
            for r in read_table(
                summary["outputs"]["data"], "test", columns=["sample_id", "findings"]
            ).to_pylist()
        }
        for b in batch:
            steps = summariser_contract.steps_from_findings(findings[b["sample_id"]])
            out = handle.summarise.remote("", steps, "").result(timeout_s=120)
            assert out["summary"] == b["generated_text"], b["sample_id"]
    finally:
        remove(ray_cluster.dashboard_url, "medray")
