"""Batch inference of the text models (summariser, medical QA) without Ray: the predictor
class on the tiny text LM, its teacher-forced NLL, and agreement with the SFT evaluation."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pytest

from medray.eval.predictions import read_predictions, write_predictions
from medray.infer.text_predictor import TEXT_COLUMNS, TextPredictor, unusable_reason
from medray.models.generate import completion_nll

pytestmark = pytest.mark.unit

MCQ = [
    {
        "sample_id": "mcq-1",
        "source": "medmcqa",
        "split": "validation",
        "task": "mcq",
        "question": "Which drug is a beta blocker?",
        "answer": "Propranolol",
        "answer_type": "choice",
        "choices": ["Aspirin", "Propranolol", "Insulin", "Heparin"],
        "rationale": "Propranolol blocks beta adrenergic receptors.",
    },
    {
        "sample_id": "mcq-2",
        "source": "medmcqa",
        "split": "validation",
        "task": "mcq",
        "question": "Deficiency of which vitamin causes scurvy?",
        "answer": "Vitamin C",
        "answer_type": "choice",
        "choices": ["Vitamin A", "Vitamin C"],
    },
    {  # no question text: the contract cannot ask it
        "sample_id": "mcq-3",
        "source": "medmcqa",
        "split": "validation",
        "task": "mcq",
        "question": "",
        "answer": "7.4",
        "answer_type": "choice",
        "choices": ["7.0", "7.4"],
    },
]
REPORTS = [
    {
        "sample_id": "r-1",
        "source": "mimic-cxr",
        "split": "test",
        "task": "report",
        "findings": "The heart size is normal. There is a small left pleural effusion.",
        "impression": "Small left pleural effusion.",
    },
    {  # no findings: nothing to summarise
        "sample_id": "r-2",
        "source": "mimic-cxr",
        "split": "test",
        "task": "report",
        "findings": None,
        "impression": "No acute process.",
    },
]


@pytest.fixture(scope="module")
def tiny_lm() -> str:
    from medray.models import resolve

    return resolve("tiny-lm", "lm")


def _table(rows):
    return pa.Table.from_pylist(rows)


def test_completion_nll_is_the_teacher_forced_loss_and_batch_invariant(tiny_lm):
    import torch

    from medray.models.finetuned import load_finetuned

    model, tok, _ = load_finetuned(tiny_lm, "lm")
    prompts = ["Question: a?\nAnswer:", "Question: a much longer question here?\nAnswer:"]
    targets = [" B. Aspirin", " A"]
    batch = completion_nll(model, tok, prompts, targets)
    for (nll, n), p, t in zip(batch, prompts, targets, strict=True):
        p_ids = tok(p)["input_ids"]
        c_ids = tok(t, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p_ids + c_ids])
        labels = ids.clone()
        labels[0, : len(p_ids)] = -100
        with torch.no_grad():
            loss = float(model(input_ids=ids, labels=labels).loss)  # mean over c_ids
        assert n == len(c_ids)
        assert nll == pytest.approx(loss * n, rel=1e-4)
        assert completion_nll(model, tok, [p], [t])[0][0] == pytest.approx(nll, rel=1e-4)
    assert completion_nll(model, tok, ["Question: x\nAnswer:"], [""]) == [(0.0, 0)]


def test_medqa_rows_one_prediction_each_and_the_sft_evaluation_agrees(tiny_lm, tmp_path):
    from medray.train.sft_eval import SFTGenerator
    from medray.train.sft_tasks import prompt_for

    pred = TextPredictor([{"label": "qa", "model": tiny_lm}], task="medqa")
    out = pred(_table(MCQ)).to_pylist()
    assert [r["sample_id"] for r in out] == ["mcq-1", "mcq-2", "mcq-3"]  # none dropped
    ok, ok2, bad = out
    assert bad["error"].startswith("input: ") and bad["raw_text"] is None
    for r in (ok, ok2):
        assert r["error"] == "" and r["n_tokens"] > 0 and r["nll"] > 0
        assert r["finish_reason"] in ("stop", "length")
        assert r["parse_ok"] == (r["mcq_pred"] is not None)
        assert r["input_text"] == " ".join(MCQ[out.index(r)]["question"].split())
    assert ok["reference_text"] == MCQ[0]["rationale"] and ok2["reference_text"] is None
    # The same completion as the SFT job's held-out evaluation (one generate path).
    gen = SFTGenerator(tiny_lm, "lm", pred.params.max_new_tokens)
    import pandas as pd

    raw = gen(pd.DataFrame({"prompt": [prompt_for("medqa", MCQ[0])]}))["raw_text"][0]
    assert ok["raw_text"] == raw
    # The rows are a valid predictions folder (the contract's types and rules).
    rows = [{k: v for k, v in r.items() if k not in ("model_label", "actor")} for r in out]
    folder = tmp_path / "qa"
    write_predictions(
        folder, rows, model=tiny_lm, model_label="qa", dataset="d", split="validation"
    )
    preds = read_predictions(folder)
    assert len(preds.table) == 3
    # jobs.evaluate reports them: MCQ accuracy over the questions, and the perplexity of
    # the reference completions (exp of the summed NLL over the summed tokens), by hand.
    from jobs import evaluate

    s = evaluate.main(
        evaluate.config_for(
            {"qa": str(folder)}, dataset="d", split="validation",
            fingerprint=preds.manifest.dataset_fingerprint, output=str(tmp_path / "report"),
            aggregate=False,
        )
    )  # fmt: skip
    h = s["runs"]["qa"]
    letters = {"mcq-1": MCQ[0], "mcq-2": MCQ[1]}
    right = [
        r["mcq_pred"] is not None
        and r["mcq_pred"] == "ABCD"[letters[r["sample_id"]]["choices"].index(
            letters[r["sample_id"]]["answer"])]
        for r in (ok, ok2)
    ]  # fmt: skip
    assert h["MCQ accuracy"] == pytest.approx(sum(right) / 3)  # the unusable row counts wrong
    nll = ok["nll"] + ok2["nll"]
    assert h["perplexity"] == pytest.approx(math.exp(nll / (ok["n_tokens"] + ok2["n_tokens"])))
    assert "Multiple choice" in Path(s["report"]).read_text()


def test_summariser_rows_carry_generated_reference_and_input_text(tiny_lm):
    pred = TextPredictor(
        [{"label": "a", "model": tiny_lm}, {"label": "b", "model": tiny_lm}], task="summariser"
    )
    out = pred(_table(REPORTS)).to_pylist()
    assert [(r["model_label"], r["sample_id"]) for r in out] == [
        ("a", "r-1"), ("a", "r-2"), ("b", "r-1"), ("b", "r-2"),
    ]  # fmt: skip
    r1, r2 = out[0], out[1]
    assert r1["reference_text"] == "Small left pleural effusion."
    assert r1["input_text"] == REPORTS[0]["findings"]
    assert r1["generated_text"] == (r1["raw_text"] or "").strip()
    assert r1["mcq_pred"] is None and r1["n_tokens"] > 0
    assert "findings" in r2["error"] and r2["generated_text"] is None
    assert set(TEXT_COLUMNS) <= set(pred.schema.names)


def test_unusable_reason_names_the_task_mismatch():
    assert "answers 'mcq' rows" in unusable_reason("medqa", REPORTS[0])
    assert unusable_reason("summariser", REPORTS[0]) == ""
    with pytest.raises(ValueError, match="task must be one of"):
        TextPredictor([], task="reasoner")
