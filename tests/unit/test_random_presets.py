"""Real-size random-weight presets: published sizes, marking, refusal; reasoner device fixes.

No real-size model is built here: architectures are instantiated on the meta device.
"""

from __future__ import annotations

import copy
import json
import logging

import pytest
import torch
from click.testing import CliRunner

from medray.cli.main import cli
from medray.config import ConfigError, from_dict
from medray.models import (
    PRESETS,
    UnknownPresetError,
    is_random_weights,
    random_weights_preset,
)
from medray.models.fullsize import RANDOM_MARKER, padded_tokenizer
from medray.models.real_configs import PUBLISHED_PARAMS
from medray.models.tokenizer import pad_vocab, train_tokenizer
from serve_apps.settings import AppArgs

pytestmark = pytest.mark.unit


def _params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_random_presets_have_the_published_architectures():
    import open_clip

    from medray.models.tiny import make_qwen2_lm, make_qwen2_vl

    vl, lm, clip = (PRESETS[n].spec for n in ("qwen2-vl-2b", "qwen2.5-0.5b", "clip-vit-b-32"))
    assert (vl, lm, clip) == ({}, {}, {})  # the hub presets themselves build nothing
    vl = random_weights_preset("qwen2-vl-2b").spec
    lm = random_weights_preset("qwen2.5-0.5b").spec
    clip = random_weights_preset("clip-vit-b-32").spec
    specs_before = copy.deepcopy((vl, lm, clip))
    keys_before = [random_weights_preset(n).cache_key() for n in ("qwen2-vl-2b", "qwen2.5-0.5b")]
    tok = padded_tokenizer(vl["tokenizer_size"], 0)
    assert len(tok) == 151665  # Qwen2's tokenizer length
    model, processor = make_qwen2_vl(
        tok,
        vl["text_config"],
        vl["vision_config"],
        (vl["min_pixels"], vl["max_pixels"]),
        0,
        dtype=torch.bfloat16,
        device="meta",
    )
    assert _params(model) == PUBLISHED_PARAMS["Qwen/Qwen2-VL-2B-Instruct"]
    assert model.dtype == torch.bfloat16
    assert model.config.text_config.rope_parameters["mrope_section"] == [16, 24, 24]
    assert model.config.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert processor.image_processor.size["longest_edge"] == 12845056
    text = make_qwen2_lm(tok, lm["config"], 0, dtype=torch.bfloat16, device="meta")
    assert _params(text) == PUBLISHED_PARAMS["Qwen/Qwen2.5-0.5B-Instruct"]
    assert clip == open_clip.get_model_config("ViT-B-32")
    with torch.device("meta"):
        assert _params(open_clip.CLIP(**clip)) == PUBLISHED_PARAMS["ViT-B-32"]
    # Building must not rewrite the presets' specs (their cache keys hash them).
    assert (vl, lm, clip) == specs_before
    assert keys_before == [
        random_weights_preset(n).cache_key() for n in ("qwen2-vl-2b", "qwen2.5-0.5b")
    ]


def test_padded_vocab_encodes_as_before_and_decodes_every_id():
    tok = train_tokenizer(vocab_size=512, seed=0)
    padded = pad_vocab(tok, 5000)
    assert padded.get_vocab_size() == 5000
    text = 'FINDINGS: small left pleural effusion. {"answer": "yes"}'
    assert padded.encode(text).ids == tok.encode(text).ids
    assert len(set(padded.get_vocab().values())) == 5000
    assert padded.decode([4999, 4000, tok.get_vocab_size()]).strip()
    with pytest.raises(ValueError, match="cannot pad"):
        pad_vocab(tok, 10)


def test_random_twins_are_marked_and_unknown_ones_explained(tmp_path):
    assert random_weights_preset("qwen2-vl-2b").name == "qwen2-vl-2b-random"
    assert random_weights_preset("qwen2-vl-2b-random").source == "random"
    with pytest.raises(UnknownPresetError, match="no random-weight.*qwen2-vl-2b"):
        random_weights_preset("phi-2")
    assert is_random_weights("clip-vit-b-32-random")
    assert not is_random_weights("tiny-lm") and not is_random_weights("qwen2-vl-2b")
    assert not is_random_weights(str(tmp_path))
    (tmp_path / "medray_build.json").write_text(json.dumps({"random_weights": True}))
    assert is_random_weights(str(tmp_path))


def test_loaders_warn_and_serving_refuses_random_weights(tmp_path, caplog):
    from medray.models.loading import _load

    (tmp_path / "medray_build.json").write_text(json.dumps({"random_weights": True}))
    with caplog.at_level(logging.WARNING, logger="medray.models.loading"):
        assert _load(str(tmp_path), "lm", lambda loc: "loaded") == "loaded"
    assert "RANDOM weights" in caplog.text and RANDOM_MARKER in caplog.text
    for models in ({"reasoner": "qwen2-vl-2b-random"}, {"summariser": str(tmp_path)}):
        with pytest.raises(ConfigError, match="RANDOM weights.*serving refuses"):
            from_dict(AppArgs, {"models": models})
    assert from_dict(AppArgs, {"models": {"reasoner": "qwen2-vl-2b"}})


def test_cli_builds_random_weights_only_when_asked():
    runner = CliRunner()
    res = runner.invoke(cli, ["models", "build", "qwen2-vl-2b-random"])
    assert res.exit_code == 1 and "--random-weights" in res.output
    res = runner.invoke(cli, ["models", "build", "--random-weights", "phi-2"])
    assert res.exit_code == 1 and "no random-weight" in res.output
    res = runner.invoke(cli, ["models", "build", "--random-weights"])
    assert res.exit_code == 1 and "needs preset NAMES" in res.output
    listing = runner.invoke(cli, ["models", "list"]).output
    assert "qwen2-vl-2b-random" in listing and "RANDOM weights" in listing


def test_stop_flag_answers_on_the_ids_device():
    """generate ORs the criterion into a mask on the ids' device: a CPU mask fails on CUDA."""
    from medray.serving.reasoner import _StopFlag

    flag = _StopFlag()
    out = flag(torch.zeros((3, 5), dtype=torch.long, device="meta"), None)
    assert out.device.type == "meta" and out.shape == (3,) and out.dtype == torch.bool


class _Processor:
    """Records the keyword arguments of each processor call."""

    def __init__(self) -> None:
        self.calls: list[dict] = []
        self.padding_side = "right"

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self

    def to(self, device):
        self.moved_to = device
        return self


@pytest.mark.parametrize(
    "device,images,expected", [("cuda:0", ["img"], "cuda:0"), ("cpu", ["img"], None)]
)
def test_generate_path_prepares_images_on_the_model_device(device, images, expected):
    from medray.models.generate import encode

    proc = _Processor()  # no model: only the processor routing is under test
    encode(proc, ["p"], images, device)
    encode(proc, ["p"], (), device)
    assert proc.calls[0].get("device") == expected
    assert "device" not in proc.calls[1]  # text only: nothing to place
    assert proc.moved_to == device
    assert proc.padding_side == "right"  # left only while encoding a batch
