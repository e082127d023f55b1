"""The demo's printed figures and their targets, from a pipeline summary (no Ray)."""

from __future__ import annotations

import pytest

from medray.cli.demo_figures import MIN_JSON_VALIDITY, figures

pytestmark = pytest.mark.unit


def _summary(json_valid: float, zs: float, ft: float, n_images: int, rouge: float, copy: float):
    return {
        "stages": {
            "batch_infer": {
                "input_rows": 24,
                "models": {"base": {"json_valid": 0.0}, "sft": {"json_valid": json_valid}},
            },
            "evaluate": {
                "report": "/r/report.md",
                "plots": ["a.png"],
                "runs": {
                    "sft": {"closed accuracy": 0.6, "blank-image accuracy": 0.5},
                    "grpo": {"closed accuracy": 0.7, "blank-image accuracy": 0.5},
                },
                "intervals": {"sft": {"closed accuracy": {"low": 0.4, "high": 0.8}}},
                "paired": [
                    {
                        "a": "sft",
                        "b": "grpo",
                        "metrics": {
                            "closed accuracy": {"n": 10, "delta": 0.1, "low": -0.1, "high": 0.3}
                        },
                    }
                ],
            },
            "train_clip": {
                "zero_shot": {"i2t_R@1": zs},
                "fine_tuned": {"i2t_R@1": ft, "n_images": n_images},
            },
            "summariser_sft": {"eval": {"n": 32, "rougeL": rouge, "copy_input_rougeL": copy}},
            "medqa_sft": {"eval": {"n": 20, "accuracy": 0.35, "majority_rate": 0.3}},
        },
        "analyze": {"model": "reasoner-grpo", "reasoning_ok": True},
    }


def test_figures_meet_their_targets_only_when_the_measurements_do():
    good = {name: ok for name, _, ok in figures(_summary(0.95, 0.01, 0.05, 110, 0.4, 0.2))}
    assert good == {
        "reasoner sft: JSON validity on 24 held-out rows": True,
        "reasoner sft: closed accuracy [95% bootstrap] | blank-image accuracy (rows with a "
        "blank-image answer, open and closed)": None,  # printed, no target
        "reasoner grpo: closed accuracy [95% bootstrap] | blank-image accuracy (rows with a "
        "blank-image answer, open and closed)": None,
        "reasoner grpo - sft: closed accuracy, paired over 10 rows [95%]": None,
        "report plots (/r/report.md)": True,
        "CLIP test image->text R@1 on 110 images: zero-shot -> fine-tuned": True,
        "summariser held-out ROUGE-L on 32 reports | copy-the-input": True,
        "medical QA held-out MCQ accuracy on 20 questions | majority answer": None,  # printed
        "analyze answer by 'reasoner-grpo': reasoning.ok": True,
    }
    bad = figures(_summary(MIN_JSON_VALIDITY - 0.01, 0.05, 0.05, 110, 0.2, 0.3))
    assert [ok for _, _, ok in bad] == [False, None, None, None, True, False, False, None, True]
    values = dict((name, v) for name, v, _ in bad)
    assert values[next(n for n in values if n.startswith("reasoner sft: closed"))] == (
        "0.600 [0.400, 0.800] | 0.500"
    )
    assert values["reasoner grpo - sft: closed accuracy, paired over 10 rows [95%]"] == (
        "+0.100 [-0.100, +0.300]"
    )
    few = figures(_summary(0.95, 0.01, 0.05, 99, 0.4, 0.2))  # too few CLIP test images
    assert [ok for name, _, ok in few if name.startswith("CLIP")] == [False]


def test_text_models_figures_come_from_their_reports():
    s = _summary(0.95, 0.01, 0.05, 110, 0.4, 0.2)
    s["stages"]["evaluate"] |= {
        "text_reports": {"summariser": "/r/s.md", "medqa": "/r/m.md"},
        "text_runs": {
            "summariser": {"sft": {"rows": 32, "ROUGE-L": 0.41, "BLEU": 12.5, "perplexity": 3.2}},
            "medqa": {"sft": {"rows": 20, "MCQ accuracy": 0.35, "perplexity": None}},
        },
    }
    text = [f for f in figures(s) if f[0].startswith(("summariser sft batch", "medqa sft batch"))]
    assert text == [
        (
            "summariser sft batch inference on 32 held-out rows: ROUGE-L | BLEU | perplexity "
            "(/r/s.md)",
            "0.410 | 12.500 | 3.200",
            True,
        ),
        (
            "medqa sft batch inference on 20 held-out rows: MCQ accuracy | perplexity (/r/m.md)",
            "0.350 | -",
            False,  # no log-likelihoods reached the report
        ),
    ]


def test_caption_figures_show_both_rankings():
    s = _summary(0.95, 0.01, 0.05, 110, 0.4, 0.2)
    s["stages"]["evaluate"]["runs"]["sft"] |= {
        "caption ROUGE-L": 0.8, "AURC": 0.31, "AURC (consistency)": 0.35,
    }  # fmt: skip
    got = {name: value for name, value, _ in figures(s) if "caption" in name}
    assert got == {
        "reasoner sft: caption ROUGE-L | AURC answering by confidence | by caption-question "
        "consistency": "0.800 | 0.310 | 0.350"
    }
