"""The pipeline's stage registry, config sections and plan check (no Ray, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.pipeline import (
    DEFAULT_CONFIG,
    STAGES,
    Context,
    PipelineConfig,
    _reasoner_models,
    selected_stages,
)
from medray.config import ConfigError, load_config

pytestmark = pytest.mark.unit

ORDER = ["preprocess", "train_clip", "index", "search", "sft_reasoner", "grpo",
         "summariser_sft", "medqa_sft", "batch_infer", "evaluate", "serve"]  # fmt: skip


def _cfg(*overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, DEFAULT_CONFIG, list(overrides))


def test_the_demo_config_runs_every_stage_in_order_and_each_has_its_section():
    cfg = _cfg()
    assert list(STAGES) == ORDER
    assert list(cfg.stages) == ORDER == selected_stages(cfg)
    for name in STAGES:
        assert hasattr(cfg, name), name  # a config section per stage
    assert cfg.sft_reasoner.task == "reasoner" and cfg.summariser_sft.task == "summariser"
    assert cfg.medqa_sft.task == "medqa"
    assert cfg.grpo.grpo.init == "" and cfg.batch_infer.input.path == ""  # from earlier stages
    assert not cfg.sft_reasoner.eval.enabled  # batch_infer + evaluate score it instead
    PipelineConfig()  # the dataclass defaults make a valid plan too


def test_selected_stages_run_in_registry_order():
    cfg = _cfg("stages=[evaluate,grpo,preprocess,batch_infer,sft_reasoner]")
    assert selected_stages(cfg) == ["preprocess", "sft_reasoner", "grpo", "batch_infer", "evaluate"]
    with pytest.raises(ConfigError, match="unknown stage 'sft'.*summariser_sft"):
        _cfg("stages=[preprocess,sft]")


def test_grpo_without_the_sft_stage_needs_grpo_init():
    with pytest.raises(ConfigError, match="stage 'grpo' needs 'reasoner_sft'") as e:
        _cfg("stages=[preprocess,grpo]")
    assert "add 'sft_reasoner' to `stages` or set grpo.grpo.init" in str(e.value)
    with pytest.raises(
        ConfigError, match="stage 'grpo' needs 'data'.*'preprocess'.*grpo.data.input"
    ):
        _cfg("stages=[grpo]", "grpo.grpo.init=/models/sft")
    _cfg("stages=[grpo]", "grpo.grpo.init=/models/sft", "grpo.data.input=/data/vqa")


def test_a_set_config_field_wins_else_the_earlier_stage_output(tmp_path):
    cfg = _cfg("stages=[preprocess,grpo]", "grpo.grpo.init=/models/sft")
    ctx = Context(cfg=cfg, out_dir=tmp_path, outputs={"data": "/runs/x/data"})
    assert ctx.need("grpo", "reasoner_sft") == "/models/sft"  # no sft_reasoner output
    ctx.outputs["reasoner_sft"] = "/runs/x/sft_reasoner/final"
    assert ctx.need("grpo", "reasoner_sft") == "/models/sft"  # the config field wins
    assert ctx.need("grpo", "data") == "/runs/x/data"
    ctx = Context(cfg=_cfg(), out_dir=tmp_path, outputs={"reasoner_sft": "/runs/x/final"})
    assert ctx.need("grpo", "reasoner_sft") == "/runs/x/final"
    with pytest.raises(ConfigError, match="stage 'grpo' needs 'data'.*set grpo.data.input"):
        ctx.need("grpo", "data")  # a stage that should have given it did not


def test_stage_dependencies_fail_with_the_stage_to_add():
    with pytest.raises(ConfigError, match="stage 'evaluate' needs 'predictions'.*'batch_infer'"):
        _cfg("stages=[preprocess,evaluate]")
    with pytest.raises(
        ConfigError, match="stage 'batch_infer' needs 'data'.*batch_infer.input.path"
    ):
        _cfg("stages=[batch_infer]")
    _cfg("stages=[batch_infer]", "batch_infer.input.path=/data/vqa")
    with pytest.raises(ConfigError, match="stage 'summariser_sft' needs 'data'"):
        _cfg("stages=[summariser_sft]")
    with pytest.raises(ConfigError, match="stage 'index' needs 'data'"):
        _cfg("stages=[index]")
    _cfg("stages=[index]", "index.cases.enabled=false")  # knowledge only: no data needed


def test_sections_that_contradict_the_pipeline_are_refused():
    with pytest.raises(ConfigError, match="sft_reasoner.task must be 'reasoner'"):
        _cfg("sft_reasoner.task=summariser")
    with pytest.raises(ConfigError, match="batch_infer.evaluate.enabled must be false"):
        _cfg("batch_infer.evaluate.enabled=true")


def _adapter(folder: Path, base: Path) -> str:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / "medray_final.json").write_text(
        json.dumps({"base_model": str(base), "base_model_name": "tiny-qwen2-vl"})
    )
    return str(folder)


def test_batch_inference_adds_the_trained_reasoners_as_base_plus_adapter(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    sft = _adapter(tmp_path / "sft", base)
    grpo = _adapter(tmp_path / "grpo", base)
    ctx = Context(cfg=_cfg(), out_dir=tmp_path, outputs={"reasoner_sft": sft})
    models = _reasoner_models(ctx)
    assert [(m.label, m.model, m.adapter) for m in models] == [
        ("base", "tiny-qwen2-vl", ""),
        ("sft", str(base), sft),
    ]
    ctx.outputs["reasoner_grpo"] = grpo
    assert [m.label for m in _reasoner_models(ctx)] == ["base", "sft", "grpo"]

    taken = _cfg("batch_infer.models=[{label: sft, model: tiny-qwen2-vl}]")
    with pytest.raises(ConfigError, match="already has a model labelled 'sft'"):
        _reasoner_models(Context(cfg=taken, out_dir=tmp_path, outputs={"reasoner_sft": sft}))
