"""GRPO settings, config file and policy resolution (no Ray, no training)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from medray.config import ConfigError, load_config
from medray.models.finetuned import AdapterBaseMismatchError
from medray.train.grpo import GRPOSettings, policy_source

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def test_tiny_config_loads_with_default_reward_weights():
    from jobs.train_grpo import TrainGRPOConfig

    cfg = load_config(TrainGRPOConfig, REPO / "jobs/configs/grpo_tiny.yaml")
    assert cfg.grpo.rewards.as_dict() == {
        "format": 0.2, "answer": 0.4, "consistency": 0.2, "counterfactual": 0.2,
    }  # fmt: skip
    assert cfg.scaling.num_workers == 2 and cfg.grpo.deepspeed.zero_stage == 2
    with pytest.raises(ConfigError, match="rewards"):
        load_config(TrainGRPOConfig, REPO / "jobs/configs/grpo_tiny.yaml", ["grpo.rewards.fmt=1"])


def test_settings_reject_bad_groups():
    with pytest.raises(ConfigError, match="at least 2"):
        GRPOSettings(num_generations=1)
    with pytest.raises(ConfigError, match="multiple"):
        GRPOSettings(num_generations=3)  # default batch 4


def test_policy_source_adapter_full_and_base(tmp_path, tiny_models):
    base, adapter = policy_source(GRPOSettings())
    assert base == tiny_models["tiny-qwen2-vl"] and adapter is None
    full = tmp_path / "full"
    full.mkdir()
    assert policy_source(GRPOSettings(init=str(full))) == (str(full), None)
    ad = tmp_path / "adapter"
    ad.mkdir()
    (ad / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "gone"}))
    assert policy_source(GRPOSettings(init=str(ad))) == (tiny_models["tiny-qwen2-vl"], str(ad))
    (ad / "medray_final.json").write_text(
        json.dumps({"base_model": str(full), "base_model_name": "my-base"})
    )
    assert policy_source(GRPOSettings(model=str(full), init=str(ad))) == (str(full), str(ad))
    # An SFT adapter of another base is refused by name before any worker starts.
    with pytest.raises(AdapterBaseMismatchError, match="trained on base model 'my-base'"):
        policy_source(GRPOSettings(init=str(ad)))
    with pytest.raises(FileNotFoundError, match="grpo.init"):
        policy_source(GRPOSettings(init=str(tmp_path / "missing")))


def test_prompt_is_the_reasoner_contract():
    from medray.contracts.reasoner import messages
    from medray.train.grpo import to_trl_dataset

    datasets = pytest.importorskip("datasets")
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    ds = datasets.Dataset.from_list([{"question": "Is there a nodule?", "image": buf.getvalue()}])
    assert to_trl_dataset(ds)[0]["prompt"] == messages("Is there a nodule?", True)
