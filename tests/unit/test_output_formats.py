"""The reasoner's output formats (the reasoning-format ablation): prompt, target, parser and
the model's recorded format agree; the served and GRPO paths refuse an ablation model."""

from __future__ import annotations

import json
import typing

import pytest

from medray.contracts import reasoner as contract

pytestmark = pytest.mark.unit

ROW = {
    "sample_id": "s:1",
    "task": "vqa",
    "question": "Is there a lesion in the liver?",
    "answer": "Yes",
    "answer_type": "closed",
    "modality": "ct",
    "organ": "abdomen",
    "content_type": "abnormality",
    "boxes": [
        {"label": "Liver", "x1": 0.1, "y1": 0.1, "x2": 0.5, "y2": 0.5},
        {"label": "Lesion", "x1": 0.2, "y1": 0.2, "x2": 0.3, "y2": 0.3},
    ],
}


@pytest.mark.parametrize("fmt", list(contract.OUTPUT_FORMATS))
def test_prompt_target_and_parser_follow_the_format(fmt):
    keys = contract.OUTPUT_FORMATS[fmt]
    target = json.loads(contract.build_target(ROW, fmt))
    assert tuple(target) == keys  # the format's keys, in its order
    assert target["answer"] == "Yes" and len(target["boxes"]) == 2  # liver and lesion
    prompt = contract.messages(ROW["question"], True, fmt)[0]["content"][0]["text"]
    assert all(f'"{k}"' in prompt for k in keys)
    assert all(f'"{k}"' not in prompt for k in contract.OUTPUT_FORMATS[contract.DEFAULT_FORMAT]
               if k not in keys)  # fmt: skip
    r = contract.parse(contract.build_target(ROW, fmt), fmt=fmt)
    assert r.ok and r.value.answer == "Yes" and r.errors == []
    # The full format's parser calls a shorter object incomplete.
    full = contract.parse_answer(contract.build_target(ROW, fmt))
    assert full.ok == (fmt == contract.DEFAULT_FORMAT)


def test_the_default_format_is_what_every_path_used_before():
    assert contract.system_prompt(contract.DEFAULT_FORMAT) == contract.SYSTEM_PROMPT
    assert contract.build_target(ROW) == contract.build_target(ROW, contract.DEFAULT_FORMAT)
    with pytest.raises(ValueError, match="unknown output format 'think'"):
        contract.build_target(ROW, "think")


def test_the_sft_config_offers_exactly_the_contracts_formats():
    from jobs.train_sft import TrainSFTConfig
    from medray.config import ConfigError
    from medray.train.sft_tasks import training_row

    hint = typing.get_type_hints(TrainSFTConfig)["output_format"]
    assert set(typing.get_args(hint)) == set(contract.OUTPUT_FORMATS)
    assert TrainSFTConfig().output_format == contract.DEFAULT_FORMAT
    with pytest.raises(ConfigError, match="reasoner's"):
        TrainSFTConfig(task="summariser", output_format="answer")
    row = training_row("reasoner", ROW, "answer")
    assert json.loads(row["completion"]) == contract.target_dict(ROW, "answer")
    assert json.loads(row["prompt"])[0]["content"][0]["text"] == contract.system_prompt("answer")


def _checkpoint(tmp_path, tiny_vlm, fmt):
    """A full-checkpoint folder whose training record names ``fmt`` (config only: the
    format is read from the record, the weights are not loaded)."""
    import shutil

    folder = tmp_path / fmt
    folder.mkdir()
    shutil.copy(f"{tiny_vlm}/config.json", folder / "config.json")
    (folder / "medray_final.json").write_text(json.dumps({"output_format": fmt, "steps": 1}))
    return folder


def test_batch_inference_prompts_each_model_in_its_recorded_format(tmp_path):
    from jobs.batch_infer import ModelSettings, output_format
    from medray.config import ConfigError
    from medray.models import resolve

    tiny = resolve("tiny-qwen2-vl", "vlm")
    folder = _checkpoint(tmp_path, tiny, "answer")
    assert output_format(ModelSettings(model=str(folder)), str(folder)) == "answer"
    # Set in the config, it wins; a preset has no record: the full format.
    m = ModelSettings(model=str(folder), output_format="reasoning_answer")
    assert output_format(m, str(folder)) == "reasoning_answer"
    assert output_format(ModelSettings(), "tiny-qwen2-vl") == contract.DEFAULT_FORMAT
    with pytest.raises(ConfigError, match="output_format 'x'"):
        output_format(ModelSettings(output_format="x"), "tiny-qwen2-vl")


def test_grpo_refuses_to_start_from_an_ablation_model(tmp_path):
    from medray.models import resolve
    from medray.train.grpo import GRPOSettings, policy_source

    folder = _checkpoint(tmp_path, resolve("tiny-qwen2-vl", "vlm"), "answer")
    with pytest.raises(ValueError, match="'answer' output format"):
        policy_source(GRPOSettings(init=str(folder)))


def test_the_served_reasoner_refuses_an_ablation_adapter(tmp_path):
    from infer_fixtures import make_adapter

    from medray.models import resolve
    from medray.serving.reasoner import Reasoner

    base = resolve("tiny-qwen2-vl", "vlm")
    adapter = make_adapter(base, tmp_path / "lora")
    record = {"output_format": "answer", "base_model": base, "base_model_name": base}
    (tmp_path / "lora" / "medray_final.json").write_text(json.dumps(record))
    reasoner = Reasoner(base, {"short": adapter})
    with pytest.raises(ValueError, match="'answer' output format"):
        reasoner.load_adapter("short")
    assert reasoner.loaded_adapters() == []  # detached again


def test_the_ablation_summary_over_seeds_is_the_mean_with_a_t_interval():
    from benchmarks.format_ablation import seed_summary

    lines = [
        {"format": "answer", "steps": 300, "seed": s, "closed accuracy": a, "JSON validity": 1.0}
        for s, a in ((0, 0.5), (1, 0.6), (2, 0.7), (2, 0.7))  # seed 2 twice counts once
    ] + [{"format": "answer", "steps": 1000, "seed": 0, "closed accuracy": 0.9}]
    rows = {(r["format"], r["steps"]): r for r in seed_summary(lines)}
    r = rows[("answer", 300)]
    assert r["seeds"] == [0, 1, 2] and r["closed accuracy"] == pytest.approx(0.6)
    half = 4.302653 * 0.1 / 3**0.5  # t(0.975, 2) * sd / sqrt(n), by hand
    assert r["closed accuracy 95%"] == pytest.approx([0.6 - half, 0.6 + half], abs=1e-5)
    assert r["JSON validity 95%"] == pytest.approx([1.0, 1.0])
    assert rows[("answer", 1000)]["closed accuracy 95%"] is None  # one seed: no interval


def test_the_headline_summary_groups_by_model_and_leaves_out_paired_lines():
    from benchmarks.format_ablation import seed_summary
    from benchmarks.headline import paired_rows

    lines = [
        {"model": m, "steps": 0, "seed": s, "closed accuracy": a}
        for m, s, a in (("sft", 0, 0.9), ("sft", 1, 0.8), ("grpo", 0, 0.95), ("grpo", 1, 0.85))
    ] + [{"pair": "grpo - sft", "metric": "closed accuracy", "steps": 0, "seed": 0, "delta": 0.05}]
    rows = {r["model"]: r for r in seed_summary(lines, key="model")}
    assert set(rows) == {"sft", "grpo"} and rows["grpo"]["closed accuracy"] == pytest.approx(0.9)
    evaluation = {
        "paired": [
            {
                "a": "sft",
                "b": "grpo",
                "metrics": {
                    "closed accuracy": {"n": 4, "a": 0.5, "b": 0.75, "delta": 0.25, "low": 0.0,
                                        "high": 0.5, "level": 0.95, "b_ahead_share": 0.9},
                    "box rate": {"n": 4, "a": 0, "b": 0, "delta": 0, "low": 0, "high": 0},
                },
            }
        ]
    }  # fmt: skip
    (d,) = paired_rows(evaluation)  # box rate is not a paired headline figure
    assert d["pair"] == "grpo - sft" and d["metric"] == "closed accuracy" and d["delta"] == 0.25
