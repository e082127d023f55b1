"""Batch-inference library: answer confidence, scored generation, JSONL input, the
predictor class without Ray (corrupt image, adapter, counterfactual columns)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infer_fixtures import chest_png, corrupt_png, make_adapter, vqa_row

from medray.contracts.reasoner import answer_confidence, answer_span
from medray.models.generate import Generated

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_vlm() -> str:
    """Only the tiny VLM (the session fixture builds every preset)."""
    from medray.models import ensure_built

    return str(ensure_built("tiny-qwen2-vl"))


def test_answer_span_finds_the_last_answer_value():
    text = '{"caption": "c", "answer": "no", "reasoning": ["x"], "answer": "left lung"}'
    a, b = answer_span(text)
    assert text[a:b] == "left lung"
    t2 = '{"answer": 3, "x": 1}'
    a, b = answer_span(t2)
    assert t2[a:b] == "3"
    t3 = '{"caption": "c", "answer": "pleural eff'  # truncated: runs to the end
    a, b = answer_span(t3)
    assert t3[a:b] == "pleural eff"
    assert answer_span('{"caption": "c"}') is None
    assert answer_span('{"answer": ""}') is None


def test_answer_confidence_is_the_product_of_the_answer_tokens(tiny_vlm):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_vlm)
    text = '{"caption": "chest", "reasoning": ["a"], "boxes": [], "answer": "yes effusion"}'
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text
    rng = np.random.default_rng(0)
    lps = [float(x) for x in np.log(rng.uniform(0.2, 1.0, len(ids)))]
    gen = Generated(text, tuple(ids), tuple(lps), "stop", 10)
    # By hand: the tokens whose characters overlap the answer value.
    a, b = answer_span(text)
    expected, start = 0.0, 0
    for k in range(len(ids)):
        end = len(tok.decode(ids[: k + 1]))
        if end > a and start < b:
            expected += lps[k]
        start = end
    conf = answer_confidence(gen, tok)
    assert conf == pytest.approx(math.exp(expected))
    assert 0 < conf < 1
    assert answer_confidence(Generated('{"caption": "x"}', (1,), (-0.1,), "stop", 1), tok) is None


def test_scored_generation_log_probs_match_a_teacher_forced_pass(tiny_vlm, tmp_path):
    """The log-probs returned with the greedy answer equal those of an independent forward
    pass over prompt + answer; an adapter changes them, and the base is the base again
    after an adapter was attached."""
    import torch

    from medray.contracts.reasoner import messages
    from medray.models.finetuned import AdapterHost
    from medray.models.generate import GenerationParams, generate, render

    base = tiny_vlm
    adapter = make_adapter(base, tmp_path / "lora")
    host = AdapterHost(base, {"sft": adapter})
    params = GenerationParams(max_new_tokens=12)

    def generate_scored(msgs, images, adapter=None):
        texts = [render(host.processing, m) for m in msgs]
        with host.active(adapter) as model:
            return generate(model, host.processing, texts, images, params, scores=True)

    images = [Image.open(__import__("io").BytesIO(chest_png(s))).convert("RGB") for s in (1, 2)]
    msgs = [messages("Is there a nodule?", True), messages("What organ is this?", True)]
    gens = generate_scored(msgs, images)
    assert [len(g.token_ids) for g in gens] == [len(g.logprobs) for g in gens]
    for m, im, g in zip(msgs, images, gens, strict=True):
        prompt = host.processing.apply_chat_template(m, add_generation_prompt=True)
        inp = host.processing(text=[prompt], images=[im], return_tensors="pt")
        n = inp["input_ids"].shape[1]
        ids = torch.cat([inp["input_ids"], torch.tensor([list(g.token_ids)])], dim=1)
        with torch.no_grad():
            logits = host.model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                pixel_values=inp["pixel_values"],
                image_grid_thw=inp["image_grid_thw"],
                mm_token_type_ids=torch.cat(
                    [
                        inp["mm_token_type_ids"],
                        torch.zeros((1, len(g.token_ids)), dtype=torch.long),
                    ],
                    dim=1,
                ),
            ).logits[0]
        ref = torch.log_softmax(logits.float(), -1)[n - 1 : n - 1 + len(g.token_ids)]
        ref = ref.gather(-1, torch.tensor(g.token_ids).unsqueeze(-1)).squeeze(-1)
        assert np.allclose(ref.numpy(), np.array(g.logprobs), atol=1e-3)
    tuned = generate_scored(msgs, images, adapter="sft")
    assert any(
        t.token_ids != g.token_ids or not np.allclose(t.logprobs, g.logprobs, atol=1e-3)
        for t, g in zip(tuned, gens, strict=True)
    )
    again = generate_scored(msgs, images)
    for a, g in zip(again, gens, strict=True):
        assert a.token_ids == g.token_ids and np.allclose(a.logprobs, g.logprobs, atol=1e-4)


def test_jsonl_records_keep_bad_lines_as_error_rows(tmp_path):
    from medray.infer.inputs import InputError, jsonl_records

    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.png").write_bytes(chest_png(0))
    lines = [
        json.dumps(
            {"id": "a", "image": "img/a.png", "question": "Is there a nodule?", "answer": "yes"}
        ),
        "{not json",
        json.dumps({"id": "c", "image": "img/missing.png"}),
        json.dumps({"id": "d", "question": "Which drug?", "answer": "B", "choices": ["A", "B"]}),
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(lines) + "\n")
    rows = {r["sample_id"]: r for r in jsonl_records(str(tmp_path), "test", "mine")}
    assert set(rows) == {"a", "q.jsonl:2", "c", "d"}
    assert (
        rows["a"]["image_path"] == str(tmp_path / "img" / "a.png") and not rows["a"]["input_error"]
    )
    assert "not JSON" in rows["q.jsonl:2"]["input_error"]
    assert "no question" in rows["c"]["input_error"]
    assert rows["d"]["task"] == "mcq" and rows["d"]["answer_type"] == "choice"
    (tmp_path / "dup.jsonl").write_text(lines[0] + "\n")
    with pytest.raises(InputError, match="'a' appears more than once"):
        jsonl_records(str(tmp_path), "test", "mine")


def test_predictor_keeps_corrupt_rows_and_answers_with_every_model(tiny_vlm, tmp_path):
    """Without Ray: one batch through two models (base + LoRA); the corrupt image row is
    in both outputs with its error; the rows fit the predictions contract."""
    from medray.data.schema import table_from_rows
    from medray.eval.predictions import build_table
    from medray.infer.predictor import VQAPredictor

    base = tiny_vlm
    adapter = make_adapter(base, tmp_path / "lora")
    p = VQAPredictor(
        [{"label": "base", "model": base}, {"label": "sft", "model": base, "adapter": adapter}],
        max_new_tokens=8,
        counterfactual=True,
        blank_control=True,
    )
    rows = [vqa_row(0), vqa_row(1, image=corrupt_png()), vqa_row(3)]
    out = p(table_from_rows(rows)).to_pylist()
    assert len(out) == 6 and [r["model_label"] for r in out] == ["base"] * 3 + ["sft"] * 3
    bad = [r for r in out if r["sample_id"] == "t:001"]
    assert len(bad) == 2 and all(r["error"].startswith("image: ") for r in bad)
    assert all(r["pred_answer"] is None and not r["parse_ok"] for r in bad)
    good = [r for r in out if r["sample_id"] != "t:001"]
    assert all(r["error"] == "" and r["raw_text"] is not None and r["latency_ms"] > 0 for r in good)
    assert all(r["node"] == "local" for r in out)
    build_table([{k: v for k, v in r.items() if k not in ("model_label", "actor")} for r in out])
    assert len(p.hosts) == 1  # the adapter shares its base model


def test_output_schema_is_fixed_whatever_the_rows():
    from medray.infer.predictor import output_schema, vqa_columns

    s = output_schema(vqa_columns(counterfactual=True, blank=False))
    assert {"cf_roi_answer", "cf_random_answer", "node", "model_label", "actor"} <= set(s.names)
    assert "blank_answer" not in s.names
    assert isinstance(s, pa.Schema)


def test_batches_in_flight_per_actor_depend_on_the_split_size():
    from jobs.batch_infer import ActorSettings, tasks_in_flight

    pool = ActorSettings(concurrency=3, max_tasks_in_flight=2)
    assert tasks_in_flight(pool, 12) == 2  # 4 batches per actor: queue a second one
    assert tasks_in_flight(pool, 11) == 1  # a small split: one at a time, every actor gets some
    assert tasks_in_flight(ActorSettings(concurrency=1, max_tasks_in_flight=3), 4) == 3


def test_caption_consistency_is_the_grpo_reward_of_each_answer(tiny_vlm):
    """``caption_consistency``: the GRPO consistency reward of each answer's caption and
    its question (MiniLM), 0 without a caption; null when no embedder is configured."""
    from medray.data.schema import table_from_rows
    from medray.infer.predictor import VQAPredictor
    from medray.train.rewards import consistency_rewards

    p = VQAPredictor(
        [{"label": "base", "model": tiny_vlm}], max_new_tokens=4, caption_embedder="minilm-l6"
    )
    q = "Is there a pleural effusion on this chest X-ray?"

    def answer(caption: str) -> str:
        return json.dumps({"caption": caption, "reasoning": [], "boxes": [], "answer": "yes"})

    texts = [answer("Chest X-ray with a left pleural effusion."),
             answer("A recipe for chocolate cake."), "no structured answer"]  # fmt: skip
    preds = {i: {"raw_text": t} for i, t in enumerate(texts)}
    p._consistency([{"question": q}] * 3, [0, 1, 2], preds)
    got = [preds[i]["caption_consistency"] for i in range(3)]
    assert got == pytest.approx(consistency_rewards(texts, [q] * 3, p.encoder.encode))
    assert got[0] > got[1] + 0.3 and got[2] == 0.0
    out = p(table_from_rows([vqa_row(0), vqa_row(1, image=corrupt_png())])).to_pylist()
    assert 0.0 <= out[0]["caption_consistency"] <= 1.0 and out[1]["caption_consistency"] is None
    plain = VQAPredictor([{"label": "base", "model": tiny_vlm}], max_new_tokens=4)
    assert plain(table_from_rows([vqa_row(0)])).to_pylist()[0]["caption_consistency"] is None
