"""Error analysis: each failure kind on hand-made rows, and the fixture's counts."""

from __future__ import annotations

import pytest
from eval_fixtures import VQA_ROWS, box, row

from medray.eval.errors import (
    ErrorSettings,
    error_analysis,
    failure_kinds,
    is_refusal,
    modalities_named,
)
from medray.eval.metrics import score_rows

pytestmark = pytest.mark.unit


def kinds(r, source_has_boxes=False, settings=None):
    (scored,) = score_rows([r])
    return failure_kinds(scored, settings or ErrorSettings(), source_has_boxes)


def test_each_kind_on_its_own_row():
    assert kinds(row("a")) == []
    assert kinds(row("a", pred_answer=None, parse_ok=False, parsed=None, confidence=None,
                     error="image: not an image (unrecognised format)")) == ["unreadable_image"]  # fmt: skip
    assert kinds(row("a", pred_answer=None, parse_ok=False, parsed=None,
                     error="inference: CUDA out of memory")) == ["inference_error"]  # fmt: skip
    assert kinds(row("a", pred_answer=None, parse_ok=False, parsed=None,
                     error="input: the report needs findings")) == ["unusable_input"]  # fmt: skip
    assert kinds(row("a", parse_ok=False, parsed=None)) == [
        "invalid_json"
    ]  # answer recovered, right
    assert kinds(row("a", pred_answer="", parse_ok=True)) == ["empty_answer"]
    assert kinds(row("a", pred_answer="I'm sorry, I cannot determine that.")) == ["refusal"]
    assert kinds(row("a", pred_answer="possibly")) == ["not_yes_no"]
    assert kinds(row("a", pred_answer="Yes, there is a small effusion at the left base")) == [
        "verbose_answer"
    ]
    assert kinds(row("a", answer="no", pred_answer="yes")) == ["wrong_answer"]
    assert kinds(row("a", answer="CT", answer_type="open", pred_answer="T2 weighted MR",
                     content_type="modality")) == ["wrong_modality"]  # fmt: skip
    assert kinds(row("a", pred_boxes=[[0.1, 0.1, 0.2, 0.2]]), source_has_boxes=True) == [
        "hallucinated_boxes"
    ]
    assert kinds(row("a", pred_boxes=[[0.1, 0.1, 0.2, 0.2]]), source_has_boxes=False) == []
    assert kinds(row("a", boxes=[box(0.1, 0.1, 0.3, 0.3)])) == ["missing_boxes"]
    assert kinds(row("a", boxes=[box(0.1, 0.1, 0.3, 0.3)], pred_boxes=[[0.3, 0.1, 0.1, 1.2]])) == [
        "malformed_boxes"
    ]


def test_mcq_and_generation_rows():
    mcq = {"task": "mcq", "answer_type": "choice", "choices": ["w", "x"], "answer": "x",
           "parse_ok": False, "parsed": None, "pred_answer": None}  # fmt: skip
    assert kinds(row("a", mcq_pred="B", **mcq)) == []  # a letter, no JSON expected
    assert kinds(row("a", mcq_pred="A", **mcq)) == ["wrong_answer"]
    assert kinds(row("a", mcq_pred=None, **mcq)) == ["empty_answer"]
    gen = {"task": "report", "answer": None, "answer_type": None, "pred_answer": None,
           "reference_text": "No effusion."}  # fmt: skip
    assert kinds(row("a", generated_text="Small effusion.", **gen)) == []
    assert kinds(row("a", generated_text=" ", **gen)) == ["empty_answer"]
    assert kinds(row("a", generated_text="I cannot determine this.", **gen)) == ["refusal"]
    assert kinds(row("a", pred_answer=".")) == ["empty_answer"]


def test_verbose_threshold_and_open_questions():
    long_open = row("a", answer="pleural effusion", answer_type="open",
                    pred_answer="a large pleural effusion at the left base with atelectasis")  # fmt: skip
    assert kinds(long_open) == ["wrong_answer"]  # verbosity is judged on closed questions only
    s = ErrorSettings(verbose_ratio=10.0, verbose_min_tokens=20)
    assert (
        kinds(row("a", pred_answer="Yes, there is a small effusion at the left base"), settings=s)
        == []
    )


def test_modality_and_refusal_vocabularies():
    assert modalities_named("X-ray") == {"x-ray"} and modalities_named("chest radiograph") == {
        "x-ray"
    }
    assert modalities_named("Computed Tomography") == {"ct"} and modalities_named("MRI T1") == {
        "mri"
    }
    assert modalities_named("ct and mri") == {"ct", "mri"} and modalities_named("lung") == set()
    # a question asking for the modality is detected without a content type
    r = row("a", answer="MRI", answer_type="open", pred_answer="CT", content_type=None,
            question="In what kind of image is the lesion visible?")  # fmt: skip
    assert kinds(r) == ["wrong_modality"]
    assert is_refusal("As an AI, I can't diagnose") and is_refusal("Please consult a radiologist.")
    assert is_refusal("I’m unable to tell") and not is_refusal("no pneumothorax")


def test_error_analysis_of_the_fixture():
    e = error_analysis(score_rows(VQA_ROWS))
    counts = {k: v["count"] for k, v in e["kinds"].items()}
    assert counts == {
        "wrong_answer": 2,  # q02 (verbose yes for no), q05 (lung for left lung)
        "unreadable_image": 1,  # q07
        "invalid_json": 1,  # q08
        "refusal": 1,  # q08 raw text
        "not_yes_no": 1,  # q09 maybe
        "verbose_answer": 1,  # q02
        "wrong_modality": 1,  # q04 MRI for CT
        "hallucinated_boxes": 1,  # q02 box, slake annotates boxes
    }
    assert next(iter(counts)) == "wrong_answer"  # most frequent first
    assert e["rows_with_failure"] == 6 and e["n"] == 10
    assert e["kinds"]["wrong_answer"]["examples"] == ["q02", "q05"]
    assert e["kinds"]["unreadable_image"]["rate"] == pytest.approx(0.1)
    assert e["kinds"]["verbose_answer"]["suggestion"]


def test_text_model_kinds():
    mcq = {"task": "mcq", "answer_type": "choice", "choices": ["aspirin", "insulin"],
           "answer": "insulin", "parse_ok": False, "parsed": None}  # fmt: skip
    # An answer given by option text, not by letter: a format failure, scored by its text.
    assert kinds(row("a", mcq_pred=None, pred_answer="insulin", **mcq)) == ["wrong_option_format"]
    assert kinds(row("a", mcq_pred=None, pred_answer="B", **mcq)) == []  # a letter all the same
    assert kinds(row("a", mcq_pred=None, pred_answer="maybe both", **mcq)) == [
        "wrong_option_format",
        "wrong_answer",
    ]
    gen = {"task": "report", "answer": None, "answer_type": None, "pred_answer": None,
           "reference_text": "Small left effusion.",
           "input_text": "The heart is normal. There is a small left effusion."}  # fmt: skip
    assert kinds(row("a", generated_text="Small left effusion.", **gen)) == []
    assert kinds(
        row("a", generated_text="Small left effusion.", finish_reason="length", **gen)
    ) == ["truncated"]
    copied = "The heart is normal. There is a small left effusion. No pneumothorax."
    assert kinds(row("a", generated_text=copied, **gen)) == ["over_long", "copied_input"]
    assert kinds(row("a", generated_text="Heart normal; small effusion noted.", **gen)) == []
    # The share of the input's tokens repeated, in order (difflib's matching blocks).
    from medray.eval.errors import copied_share

    assert copied_share("p q r s", "p q x r s") == pytest.approx(4 / 5)
    assert copied_share("s r q p", "p q r s") == pytest.approx(1 / 4)
    assert copied_share("", "p q") == 0.0
    q = {**mcq, "input_text": "Which drug lowers blood glucose quickly?"}
    assert "copied_input" in kinds(
        row("a", mcq_pred=None, raw_text="Which drug lowers blood glucose quickly?",
            pred_answer="Which drug lowers blood glucose quickly?", **q)
    )  # fmt: skip
