"""Model registry: name resolution and clear errors (no model is built here)."""

from __future__ import annotations

import pytest

from medray.models import PRESETS, TINY_DEFAULTS, UnknownPresetError, get_preset, resolve

pytestmark = pytest.mark.unit


def test_presets_cover_every_kind_with_tiny_and_real_models():
    kinds = {p.kind for p in PRESETS.values()}
    assert kinds == {"vlm", "lm", "clip", "embedder"}
    for kind, name in TINY_DEFAULTS.items():
        assert PRESETS[name].kind == kind and PRESETS[name].source in ("tiny", "package")
    hub = {p.ref for p in PRESETS.values() if p.source == "hub"}
    assert {"Qwen/Qwen2-VL-2B-Instruct", "google/medgemma-4b-it", "microsoft/phi-2"} <= hub


def test_unknown_name_lists_known_presets():
    with pytest.raises(UnknownPresetError, match="unknown model preset 'qwen-tiny'.*tiny-qwen2-vl"):
        get_preset("qwen-tiny")
    with pytest.raises(UnknownPresetError):
        resolve("qwen-tiny")


def test_hub_ids_and_folders_pass_through(tmp_path):
    assert resolve("qwen2-vl-2b") == "Qwen/Qwen2-VL-2B-Instruct"
    assert resolve("someorg/some-model") == "someorg/some-model"
    assert resolve(str(tmp_path)) == str(tmp_path.resolve())


def test_kind_mismatch_is_refused():
    with pytest.raises(ValueError, match="is a lm model, expected a vlm model"):
        resolve("phi-2", "vlm")


def test_cache_key_depends_on_spec_and_seed():
    p = PRESETS["tiny-lm"]
    from dataclasses import replace

    assert p.cache_key() == replace(p).cache_key()
    assert p.cache_key() != replace(p, seed=1).cache_key()
    assert p.cache_key() != replace(p, spec={**p.spec, "num_hidden_layers": 3}).cache_key()


def test_vlm_chat_template_renders_system_text_parts():
    """A system message given as content parts renders its text, like the user turn."""
    from transformers.utils.chat_template_utils import render_jinja_template

    from medray.models.tokenizer import DEFAULT_SYSTEM, VLM_CHAT_TEMPLATE

    def render(messages):
        out, _ = render_jinja_template(
            conversations=[messages], chat_template=VLM_CHAT_TEMPLATE, add_generation_prompt=True
        )
        return out[0]

    user = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}
    parts = render([{"role": "system", "content": [{"type": "text", "text": "Be brief."}]}, user])
    assert parts.startswith("<|im_start|>system\nBe brief.<|im_end|>\n") and "'type'" not in parts
    plain = render([{"role": "system", "content": "Be brief."}, user])
    assert plain == parts
    assert render([user]).startswith(f"<|im_start|>system\n{DEFAULT_SYSTEM}<|im_end|>\n")
    assert parts.endswith(
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
