"""One contract, one loader, one generate path: the same answer through every path.

The same trained reasoner adapter answers the same image + question through batch
inference's predictor (``medray.infer.predictor.VQAPredictor``, the Ray Data class of
``jobs/batch_infer.py``), the SFT job's held-out evaluation (``SFTGenerator``), the HTTP
API's ``/v1/chat/completions`` with the adapter's model name and ``/v1/analyze``'s
``reasoning`` event; a trained summariser gives the same summary through the SFT
evaluation and the served ``summary`` event. The HTTP API runs over the plain classes
(``LocalBackend``, the code every Serve deployment wraps); a prompt, parser, loader or
generation setting that diverged on any path would make them differ.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from infer_fixtures import chest_png, vqa_row

from medray.config import from_dict
from medray.contracts import summariser as summary_contract
from medray.models.finetuned import FINAL_MARKER
from medray.serving.sse import read_events
from medray.train.sft_tasks import training_row
from serve_apps.settings import AppArgs

pytestmark = pytest.mark.integration

TOKENS = 24


def _vlm_adapter(base: str, out) -> str:
    """A LoRA adapter with random weights strong enough that the tiny VLM's greedy answers
    depend on the image and question (so equal answers across paths mean something)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from medray.models import load_vlm

    torch.manual_seed(4)
    model, _ = load_vlm(base)
    cfg = LoraConfig(
        r=8, lora_alpha=256, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    (out / FINAL_MARKER).write_text(
        json.dumps({"base_model": base, "base_model_name": "tiny-qwen2-vl", "steps": 1})
    )
    return str(out)


def _lm_adapter(base: str, out) -> str:
    """A LoRA adapter with random (non-zero) weights on the tiny text LM."""
    import torch
    from peft import LoraConfig, get_peft_model

    from medray.models import load_lm

    torch.manual_seed(3)
    model, tok = load_lm(base)
    cfg = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    tok.save_pretrained(out)
    (out / FINAL_MARKER).write_text(
        json.dumps({"base_model": base, "base_model_name": "tiny-lm", "steps": 1})
    )
    return str(out)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_models):
    root = tmp_path_factory.mktemp("trained")
    reasoner = _vlm_adapter(tiny_models["tiny-qwen2-vl"], root / "reasoner")
    summariser = _lm_adapter(tiny_models["tiny-lm"], root / "summariser")
    medqa = _lm_adapter(tiny_models["tiny-lm"], root / "medqa")
    return {"reasoner": reasoner, "summariser": summariser, "medqa": medqa}


@pytest.fixture(scope="module")
def client(trained):
    from medray.serving.guard import Guard
    from medray.serving.medqa import MedQA
    from medray.serving.reasoner import Reasoner
    from medray.serving.summariser import Summariser
    from serve_apps.backend import LocalBackend
    from serve_apps.gateway import create_app

    reasoner = Reasoner("tiny-qwen2-vl", adapters={"sft-run": trained["reasoner"]})
    backend = LocalBackend(
        Guard(),
        reasoner,
        Summariser(trained["summariser"]),
        None,
        None,
        medqa=MedQA(trained["medqa"], "medqa-run"),
    )
    args = from_dict(
        AppArgs,
        {
            "adapters": {"sft-run": trained["reasoner"]},
            "models": {"medqa": trained["medqa"], "medqa_name": "medqa-run"},
            "retrieval": {"enabled": False},
            "agent": {"enabled": False},
            "safety": {"domain_control": False},
        },
    )
    return TestClient(create_app(backend, args), base_url="http://127.0.0.1")  # loopback: no key


ROWS = [
    vqa_row(i, question=q)
    for i, q in enumerate(["Is there a nodule?", "Which side is abnormal?", "What organ is this?"])
]


def _sse(resp) -> dict[str, dict]:
    return dict(read_events(resp.iter_lines()))  # the last event of each kind


def test_every_path_gives_the_same_greedy_answer_and_summary(trained, client):
    import pyarrow as pa

    from medray.infer.predictor import VQAPredictor
    from medray.train.sft_eval import SFTGenerator

    # Batch inference (the job's Ray Data class, called on one batch).
    predictor = VQAPredictor(
        [{"label": "sft-run", "model": "tiny-qwen2-vl", "adapter": trained["reasoner"]}],
        max_new_tokens=TOKENS,
    )
    batch = predictor(pa.Table.from_pylist(ROWS))
    batch_texts = batch.column("raw_text").to_pylist()
    assert len(batch_texts) == len(ROWS) and len(set(batch_texts)) == len(ROWS)
    # The SFT job's held-out evaluation (merged adapter).
    frame = pd.DataFrame([training_row("reasoner", r) for r in ROWS])
    evaluated = SFTGenerator(trained["reasoner"], "vlm", TOKENS)(frame)["raw_text"].tolist()
    assert evaluated == batch_texts

    for row, expected in zip(ROWS, batch_texts, strict=True):
        url = (
            "data:image/png;base64," + base64.b64encode(chest_png(int(row["original_id"]))).decode()
        )
        # /v1/chat/completions with the adapter's name (text part first: the gateway places
        # the image as the contract does).
        chat = client.post(
            "/v1/chat/completions",
            json={
                "model": "sft-run",
                "max_tokens": TOKENS,
                "temperature": 0,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "text", "text": row["question"]},
                            {"type": "image_url", "image_url": {"url": url}},
                        ],
                    }
                ],
            },
        )
        assert chat.status_code == 200, chat.text
        body = chat.json()
        assert body["choices"][0]["message"]["content"] == expected
        assert body["medray_model"]["model"] == "sft-run"
        assert body["medray_model"]["kind"] == "adapter"
        # /v1/analyze's reasoning event.
        with client.stream(
            "POST",
            "/v1/analyze",
            json={
                "image": url,
                "question": row["question"],
                "model": "sft-run",
                "max_new_tokens": TOKENS,
                "temperature": 0,
                "agent": False,
            },
        ) as r:
            assert r.status_code == 200
            ev = _sse(r)
        assert ev["reasoning"]["text"] == expected
        assert ev["reasoning"]["model"]["kind"] == "adapter"
        # The served summary equals the SFT evaluation's output for the same steps.
        parsed = ev["reasoning"]["parsed"] or {}
        steps = summary_contract.steps_from_answer(
            parsed.get("caption"), parsed.get("reasoning") or [], parsed.get("answer")
        )
        if not steps:  # nothing parsed to summarise: the served summary says nothing
            assert ev["summary"]["text"] == ""
        else:
            prompt = summary_contract.prompt(steps)
            frame = pd.DataFrame([{"prompt": prompt, "completion": ""}])
            sft = SFTGenerator(trained["summariser"], "lm", summary_contract.MAX_NEW_TOKENS)
            expected_summary = summary_contract.parse(sft(frame)["raw_text"][0])
            assert ev["summary"]["text"] == expected_summary
            assert ev["summary"]["model"]["kind"] == "adapter"


def test_served_summariser_equals_the_sft_evaluation_on_report_rows(trained):
    from medray.serving.summariser import Summariser
    from medray.train.sft_eval import SFTGenerator

    reports = [
        {"task": "report", "findings": f, "impression": "x"}
        for f in (
            "Blunted left costophrenic angle. Heart size normal.",
            "Right upper lobe opacity. No effusion. Normal heart.",
        )
    ]
    frame = pd.DataFrame([training_row("summariser", r) for r in reports])
    sft = SFTGenerator(trained["summariser"], "lm", summary_contract.MAX_NEW_TOKENS)(frame)
    served = Summariser(trained["summariser"])
    outs = [
        served.summarise_steps(summary_contract.steps_from_findings(r["findings"])) for r in reports
    ]
    assert [o["summary"] for o in outs] == [summary_contract.parse(t) for t in sft["raw_text"]]
    assert all(o["summary"] for o in outs) and outs[0]["summary"] != outs[1]["summary"]


def test_generate_is_the_medqa_model_and_equals_its_sft_evaluation(trained, client):
    from medray.contracts import medqa
    from medray.train.sft_eval import SFTGenerator

    models = {m["id"]: m["endpoint"] for m in client.get("/v1/models").json()["data"]}
    assert models == {
        "medray-reasoner": "/v1/chat/completions",
        "sft-run": "/v1/chat/completions",
        "medqa-run": "/generate",
    }
    questions = ["What is pleural effusion?", "Which drug treats absence seizures?"]
    frame = pd.DataFrame([{"prompt": medqa.prompt(q), "completion": ""} for q in questions])
    evaluated = SFTGenerator(trained["medqa"], "lm", medqa.MAX_NEW_TOKENS)(frame)["raw_text"]
    for q, expected in zip(questions, evaluated, strict=True):
        r = client.post(
            "/generate",
            json={
                "question": q,
                "model": "medqa-run",
                "temperature": 0,
                "max_length": medqa.MAX_NEW_TOKENS,
                "use_safety": False,
            },
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["response"] == expected.strip() and body["response"]
        assert body["model"]["model"] == "medqa-run" and body["model"]["kind"] == "adapter"
    wrong = client.post(
        "/generate", json={"question": "What is pleural effusion?", "model": "sft-run"}
    )
    assert wrong.status_code == 404 and "medqa-run" in wrong.json()["error"]["message"]
