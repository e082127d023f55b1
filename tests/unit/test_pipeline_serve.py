"""The pipeline's ``serve`` stage: its plan (checked when the config loads, before Ray
starts) and the Serve config it builds from earlier stages' products (no Ray, no models)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.pipeline import DEFAULT_CONFIG, Context, PipelineConfig
from jobs.pipeline_stages.serving import adapter_base, resolved_app_args
from medray.config import ConfigError, load_config
from medray.retrieval import MilvusSettings
from serve_apps.app import parse_args

pytestmark = pytest.mark.unit


def _cfg(*overrides: str) -> PipelineConfig:
    return load_config(PipelineConfig, DEFAULT_CONFIG, list(overrides))


def _adapter(folder: Path, base: str) -> str:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": base}))
    (folder / "medray_final.json").write_text(json.dumps({"base_model": base}))
    return str(folder)


def test_serve_with_nothing_trained_before_it_serves_the_presets_and_says_so():
    notes = _cfg("stages=[serve]").serve_notes()
    assert "reasoner: preset 'tiny-qwen2-vl' (no trained adapter)" in notes
    assert "summariser: preset 'tiny-lm'" in notes
    assert any("nothing is trained before `serve`" in n for n in notes)


def test_the_demo_plan_serves_what_its_stages_train():
    notes = _cfg().serve_notes()
    assert notes[0] == (
        "reasoner: preset 'tiny-qwen2-vl' + adapters reasoner-sft (stage sft_reasoner), "
        "reasoner-grpo (stage grpo)"
    )
    assert "summariser: stage summariser_sft" in notes and "clip: stage train_clip" in notes
    assert "medqa: stage medqa_sft" in notes  # POST /generate answers with the trained model
    assert not any("nothing is trained" in n for n in notes)


def test_an_adapter_trained_on_another_base_is_refused_by_name_when_the_config_loads():
    with pytest.raises(ConfigError, match="adapter 'reasoner-sft' \\(stage 'sft_reasoner'\\)"):
        _cfg("sft_reasoner.sft.model=tiny-qwen2-vl-base", "stages=[preprocess,sft_reasoner,serve]")
    # LoRA off: the full checkpoint becomes the base reasoner, no adapter to refuse.
    cfg = _cfg(
        "sft_reasoner.sft.model=tiny-qwen2-vl-base",
        "sft_reasoner.sft.lora.enabled=false",
        "stages=[preprocess,sft_reasoner,serve]",
    )
    assert cfg.serve_notes()[0].startswith("reasoner: the full checkpoint of stage sft_reasoner")


def test_a_configured_adapter_folder_on_another_base_is_refused_by_name(tmp_path):
    other = _adapter(tmp_path / "other", "some-org/another-vlm")
    with pytest.raises(
        ConfigError,
        match="adapter 'mine' is refused: .*trained on base model 'some-org/another-vlm'",
    ):
        _cfg("stages=[serve]", f"serve.adapters={{mine: {other}}}")
    with pytest.raises(ConfigError, match="does not exist"):
        _cfg("stages=[serve]", f"serve.adapters={{mine: {tmp_path / 'missing'}}}")
    with pytest.raises(ConfigError, match="adapter names must differ"):
        _cfg("stages=[serve]", "serve.grpo_name=reasoner-sft")


def test_bad_serve_overrides_fail_with_the_key_before_anything_runs():
    with pytest.raises(ConfigError, match="generation"):
        _cfg("stages=[serve]", "serve.overrides=[generation.max_new_tokens=-1]")


def test_the_served_config_points_at_this_runs_products(tmp_path):
    from medray.models.registry import resolve

    base = resolve("tiny-qwen2-vl", "vlm")
    sft = _adapter(tmp_path / "sft", base)
    grpo = _adapter(tmp_path / "grpo", base)
    summariser, clip, medqa = tmp_path / "summ", tmp_path / "clip", tmp_path / "medqa"
    for folder in (summariser, clip, medqa):
        folder.mkdir()
    milvus = MilvusSettings(
        uri="http://127.0.0.1:1", cases_collection="c", knowledge_collection="k"
    )
    ctx = Context(
        cfg=_cfg("serve.port=8123"),
        out_dir=tmp_path,
        outputs={
            "reasoner_sft": sft,
            "reasoner_grpo": grpo,
            "summariser": str(summariser),
            "medqa": str(medqa),
            "clip_model": str(clip),
            "milvus": milvus,
        },
    )
    config, served = resolved_app_args(ctx)
    args = parse_args(config["applications"][0]["args"])
    assert args.adapters == {"reasoner-sft": sft, "reasoner-grpo": grpo}
    assert args.model_names() == ["medray-reasoner", "reasoner-grpo", "reasoner-sft"]
    assert args.models.summariser == str(summariser) and args.models.clip == str(clip)
    assert args.models.medqa == str(medqa)
    assert args.models.reasoner == "tiny-qwen2-vl"
    assert (args.retrieval.milvus.uri, args.retrieval.milvus.cases_collection) == (
        "http://127.0.0.1:1",
        "c",
    )
    assert config["http_options"]["port"] == 8123
    assert len(served) == 7 and "default model: reasoner-grpo" in served
    assert args.default_adapter == "reasoner-grpo"  # a request without a model gets it

    # An adapter folder whose base is not the app's reasoner is refused by name at deploy.
    ctx.outputs["reasoner_grpo"] = _adapter(tmp_path / "grpo2", "some-org/another-vlm")
    with pytest.raises(ConfigError, match="adapter 'reasoner-grpo'"):
        resolved_app_args(ctx)


def test_adapter_base_reads_the_training_marker_and_tells_full_checkpoints(tmp_path):
    assert adapter_base(_adapter(tmp_path / "a", "/models/x")) == "/models/x"
    (tmp_path / "full").mkdir()
    assert adapter_base(tmp_path / "full") is None
    with pytest.raises(FileNotFoundError):
        adapter_base(tmp_path / "nope")


def test_a_deployment_the_args_turn_off_leaves_the_serve_config_too():
    from medray.serving.deploy import load_serve_config

    names = lambda c: [d["name"] for d in c["applications"][0]["deployments"]]  # noqa: E731
    full = load_serve_config("serve_apps/configs/local.yaml")
    assert {"Retriever", "Agent"} <= set(names(full))
    off = load_serve_config(
        "serve_apps/configs/local.yaml", ["retrieval.enabled=false", "agent.enabled=false"]
    )
    assert names(off) == [n for n in names(full) if n not in ("Retriever", "Agent")]
