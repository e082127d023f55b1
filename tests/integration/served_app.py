"""The Serve app the integration tests deploy: its config, adapters, collections and UI
folders (``app_config``), shared by the session's ``served_app`` fixture (conftest.py) and
the tests that drive it (test_serve_*.py, test_ui_browser.py, test_job_coexist.py)."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medray.retrieval import CaseStore, KnowledgeStore, MilvusSettings, load_corpus
from medray.retrieval.rows import case_rows

REPO = Path(__file__).resolve().parents[2]
PORT_OFFSET = int(os.environ.get("MEDRAY_TEST_PORT_OFFSET", "0"))
SERVE_PORT = 8050 + PORT_OFFSET
BASE = f"http://127.0.0.1:{SERVE_PORT}"
KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}
CASES = "serve_test_cases"
KNOWLEDGE = "serve_test_knowledge"
ADAPTERS = ("lora-a", "lora-b", "lora-c")


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def xray(i: int) -> Image.Image:
    rng = np.random.default_rng(i)
    img = Image.new("L", (112, 112), 30)
    d = ImageDraw.Draw(img)
    d.ellipse([20, 15, 52, 95], fill=int(rng.integers(90, 200)))
    d.ellipse([60, 15, 92, 95], fill=int(rng.integers(90, 200)))
    return img.convert("RGB")


def b64(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


IMAGE = b64(png(xray(0)))


def make_adapters(root) -> dict[str, str]:
    """Real peft LoRA adapters on the tiny VLM (random init, distinct seeds)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from medray.models import load_vlm

    out = {}
    for seed, name in enumerate(ADAPTERS, start=1):
        model, _ = load_vlm("tiny-qwen2-vl")
        torch.manual_seed(seed)
        peft_model = get_peft_model(
            model,
            # Random A and B (not the usual B = 0) and a large scale, so that each adapter
            # moves the random tiny model's greedy output (a small one can leave it on the
            # same repeated token as the base model).
            LoraConfig(
                r=8,
                lora_alpha=64,
                target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                init_lora_weights=False,
            ),
        )
        peft_model.save_pretrained(root / name)
        out[name] = str(root / name)
    return out


JSON_ANSWER = {
    "caption": "Frontal chest radiograph.",
    "reasoning": ["The lungs are clear.", "The heart size is normal."],
    "boxes": [[0.1, 0.2, 0.5, 0.6]],
    "answer": "no",
}
JSON_QUESTION = "Is there a pleural effusion?"


def train_json_adapter(path) -> str:
    """A real LoRA adapter trained here until the tiny VLM writes one structured answer
    for one image and question, so step streaming is observable end to end (the untrained
    model writes no JSON)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from medray.contracts import reasoner as contract
    from medray.models import load_vlm
    from medray.models.generate import render

    model, proc = load_vlm("tiny-qwen2-vl")
    # The served prompt, built by the reasoner's contract (the one home of it).
    prompt = render(proc, contract.messages(JSON_QUESTION, True))
    image = Image.open(io.BytesIO(base64.b64decode(IMAGE.split(",", 1)[1]))).convert("RGB")
    full = proc(
        text=[prompt + json.dumps(JSON_ANSWER) + "<|im_end|>"], images=[image], return_tensors="pt"
    )
    n_prompt = proc(text=[prompt], images=[image], return_tensors="pt")["input_ids"].shape[1]
    labels = full["input_ids"].clone()
    labels[:, :n_prompt] = -100
    torch.manual_seed(0)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=16,
            lora_alpha=32,
            target_modules=[
                "q_proj",
                "k_proj",
                "v_proj",
                "o_proj",
                "gate_proj",
                "up_proj",
                "down_proj",
            ],
        ),
    )
    opt = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=5e-3)
    for _ in range(200):  # ~30 s on 2 cores; greedy decoding then reproduces the answer
        peft_model(**full, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
    peft_model.save_pretrained(path)
    return str(path)


def settings(uri: str) -> MilvusSettings:
    """The test app's collections on the test cluster's Milvus."""
    return MilvusSettings(uri=uri, cases_collection=CASES, knowledge_collection=KNOWLEDGE)


def index_collections(uri: str) -> list[str]:
    """Cases and knowledge embedded with the app's own models (tiny-clip, minilm-l6)."""
    from medray.serving.embedder import Embedder

    emb = Embedder("tiny-clip", "minilm-l6")
    labels = ["pleural effusion", "cardiomegaly", "pneumothorax", "no finding"]
    reports = [
        f"Findings: {labels[i % 4]} on the {'left' if i % 2 else 'right'}." for i in range(8)
    ]
    rows = case_rows(
        emb, [xray(i) for i in range(8)], reports, [[labels[i % 4]] for i in range(8)],
        id_prefix="case", source="serve-test",
    )  # fmt: skip
    cases = CaseStore(settings(uri))
    cases.create(len(rows[0]["image_vec"]), {"clip_model": "tiny-clip"}, drop_existing=True)
    cases.upsert(rows)
    cases.flush()
    index_knowledge(uri, emb)
    return [f"case-{i}" for i in range(8)]


def index_knowledge(uri: str, emb=None) -> None:
    """The knowledge collection: 30 chunks of the corpus, MiniLM dense + BM25."""
    from medray.serving.embedder import Embedder

    emb = emb or Embedder("tiny-clip", "minilm-l6")
    kb = KnowledgeStore(settings(uri))
    chunks = load_corpus(os.path.join(os.path.dirname(__file__), "../../datasets/knowledge"))[:30]
    dense = emb.texts([c.text for c in chunks])
    kb.create(dense.shape[1], {"text_model": "minilm-l6"}, drop_existing=True)
    kb.upsert([{**c.to_row(), "dense": dense[i].tolist()} for i, c in enumerate(chunks)])
    kb.flush()


def in_subprocess(call: str) -> None:
    """Run ``call`` (a function of this module) in a fresh Python process.

    pymilvus keeps one shared connection per address and process; when Milvus Lite drops
    it (GOAWAY "too_many_pings" after a long test session) every later client in that
    process gets the broken one. A fresh process always starts with a fresh connection.
    """
    code = f"import sys; sys.path.insert(0, 'tests/integration'); import served_app as t; t.{call}"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=os.environ, check=True, timeout=600)


def drop_knowledge(uri: str) -> None:
    KnowledgeStore(settings(uri)).drop()


SAMPLE = "sample-chest.png"  # the web UI's sample folder holds this one image


def ui_folders(root: Path) -> tuple[Path, Path]:
    """The UI app's ``samples_dir`` (one image) and ``runs_dir`` (two evaluation reports:
    ``run-b`` the newest, ``run-a`` one whose report is in its ``evaluate/`` folder)."""
    from eval_fixtures import VQA_ROWS, improved_rows, report_of

    from medray.eval.report import write_report

    samples, runs = root / "samples", root / "runs"
    samples.mkdir()
    (samples / SAMPLE).write_bytes(png(xray(2)))
    write_report(runs / "run-a" / "evaluate", report_of([("base", VQA_ROWS)]))
    write_report(runs / "run-b", report_of([("base", VQA_ROWS), ("sft", improved_rows())]))
    older = (runs / "run-a" / "evaluate" / "report.json").stat().st_mtime - 60
    os.utime(runs / "run-a" / "evaluate" / "report.json", (older, older))  # run-b is newest
    return samples, runs


def app_config(root: Path, milvus_uri: str, json_adapter: str) -> dict:
    """``serve_apps/configs/local.yaml`` as the tests deploy it: keys required (in a file
    the replicas read: the key is in no config), three random adapters and the JSON one,
    the collections of :func:`index_collections`, the UI's folders from :func:`ui_folders`."""
    from medray.serving.deploy import load_serve_config, ui_apps

    adapters = make_adapters(root)
    adapters["lora-json"] = json_adapter
    key_file = root / "api_keys"
    key_file.write_text(f"# keys of the test app\n{KEY}\n")
    overrides = [
        "auth.require=always",
        f"auth.api_keys_file={key_file}",
        f"adapters={json.dumps(adapters)}",
        "max_loaded_adapters=2",
        "generation.max_new_tokens=24",
        f"retrieval.milvus.uri={milvus_uri}",
        f"retrieval.milvus.cases_collection={CASES}",
        f"retrieval.milvus.knowledge_collection={KNOWLEDGE}",
        # The tiny reasoner writes unreadable JSON, so the agent's confidence is its
        # grounding score (at most 0.9): a threshold of 1 makes one revision certain.
        "agent.confidence_threshold=1.0",
        "agent.max_cycles=1",
        "agent.max_queries=2",
        "agent.max_new_tokens=16",
    ]
    config = load_serve_config("serve_apps/configs/local.yaml", overrides, port=SERVE_PORT)
    samples, runs = ui_folders(root)
    (ui,) = ui_apps(config)
    ui["args"] = {**(ui.get("args") or {}), "samples_dir": str(samples), "runs_dir": str(runs)}
    return config


def sse_events(resp):
    """(arrival time, event, data) for each SSE event of a streamed ``httpx`` response."""
    import time

    from medray.serving.sse import read_events

    for event, data in read_events(resp.iter_lines()):
        yield time.perf_counter(), event, data
