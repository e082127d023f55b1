"""The one loader (adapter / checkpoint / URI, base check) and the one generate path."""

from __future__ import annotations

import io
import json
import shutil

import pytest
from infer_fixtures import chest_png, make_adapter
from PIL import Image

from medray.contracts import reasoner as C
from medray.models.finetuned import (
    FINAL_MARKER,
    AdapterBaseMismatchError,
    AdapterHost,
    describe,
    load_finetuned,
)
from medray.models.generate import GenerationParams, generate, render

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny_vlm() -> str:
    from medray.models import ensure_built

    return str(ensure_built("tiny-qwen2-vl"))


@pytest.fixture(scope="module")
def adapter(tiny_vlm, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("lora") / "sft"
    make_adapter(tiny_vlm, out)
    (out / FINAL_MARKER).write_text(
        json.dumps({"base_model": tiny_vlm, "base_model_name": "tiny-qwen2-vl", "steps": 3})
    )
    return str(out)


def _images():
    return [Image.open(io.BytesIO(chest_png(s))).convert("RGB") for s in (1, 2)]


def _texts(processing):
    return [render(processing, C.messages(q, True)) for q in ("Is there a nodule?", "What organ?")]


def test_describe_tells_preset_adapter_and_checkpoint_apart(tiny_vlm, adapter):
    preset = describe("tiny-qwen2-vl", "vlm")
    assert preset.kind == "preset" and preset.adapter is None
    src = describe(adapter, "vlm")
    assert (src.kind, src.base, src.base_name, src.run["steps"]) == (
        "adapter",
        tiny_vlm,
        "tiny-qwen2-vl",
        3,
    )
    assert describe(tiny_vlm, "vlm").kind == "checkpoint"
    with pytest.raises(FileNotFoundError, match="does not exist"):
        describe("/no/such/folder", "vlm")


def test_an_adapter_trained_on_another_base_is_refused_by_name(adapter, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(adapter, other)
    (other / FINAL_MARKER).write_text(
        json.dumps({"base_model": "/models/medgemma", "base_model_name": "medgemma-4b"})
    )
    with pytest.raises(AdapterBaseMismatchError, match="trained on base model 'medgemma-4b'"):
        describe(str(other), "vlm", expected_base="tiny-qwen2-vl")
    host = AdapterHost("tiny-qwen2-vl", {"other": str(other)})
    with pytest.raises(AdapterBaseMismatchError, match="not on 'tiny-qwen2-vl'"):
        host.load("other")
    assert host.loaded() == []


def test_host_and_merged_loader_give_the_same_greedy_answers(adapter):
    """The adapter attached by name (serving, batch inference) and merged into its base
    (evaluation) answer alike; a storage URI loads the same weights."""
    host = AdapterHost("tiny-qwen2-vl", {"sft": adapter})
    images = _images()
    params = GenerationParams(max_new_tokens=16)
    with host.active("sft") as model:
        hosted = generate(
            model, host.processing_for("sft"), _texts(host.processing), images, params
        )
    merged, proc, src = load_finetuned("file://" + adapter, "vlm")
    assert src.kind == "adapter"
    direct = generate(merged, proc, _texts(proc), images, params)
    assert [g.token_ids for g in hosted] == [g.token_ids for g in direct]
    # One row at a time gives the batch's answers (left padding does not change them).
    with host.active("sft") as model:
        single = [
            generate(model, host.processing, [t], [im], params)[0]
            for t, im in zip(_texts(host.processing), images, strict=True)
        ]
    assert [g.token_ids for g in single] == [g.token_ids for g in hosted]


def test_unloading_the_last_adapter_leaves_a_working_base_model(adapter):
    """Regression: removing the only adapter made later base-model requests fail with
    KeyError from peft's disable_adapter."""
    host = AdapterHost("tiny-qwen2-vl", {"sft": adapter})
    texts, images = _texts(host.processing), _images()
    params = GenerationParams(max_new_tokens=8)
    with host.active(None) as model:
        before = generate(model, host.processing, texts, images, params, scores=True)
    with host.active("sft") as model:
        tuned = generate(model, host.processing, texts, images, params, scores=True)
    assert [g.logprobs for g in tuned] != [g.logprobs for g in before]
    host.unload("sft")
    assert host.loaded() == []
    with host.active(None) as model:
        after = generate(model, host.processing, texts, images, params, scores=True)
    assert [g.token_ids for g in after] == [g.token_ids for g in before]
    for a, b in zip(after, before, strict=True):
        assert a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
    host.load("sft")  # and it can be attached again
    with host.active("sft") as model:
        again = generate(model, host.processing, texts, images, params)
    assert [g.token_ids for g in again] == [g.token_ids for g in tuned]


def test_generation_params_are_checked():
    with pytest.raises(ValueError, match="max_new_tokens"):
        GenerationParams(max_new_tokens=0)
    with pytest.raises(ValueError, match="temperature"):
        GenerationParams(temperature=-1)
    assert GenerationParams().sampling() == {"do_sample": False}
