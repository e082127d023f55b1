"""The reasoner's contract: prompt and JSON target built from the row, parsed cleanly by its parser."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from medray.contracts.counterfactual import roi_boxes
from medray.contracts.reasoner import (
    DEFAULT_QUESTION,
    MAX_NEW_TOKENS,
    SYSTEM_PROMPT,
    build_messages,
    build_target,
    caption_for,
    messages,
    parse_answer,
    row_image,
    sft_example,
    target_dict,
)

pytestmark = pytest.mark.unit


def png(color=(120, 40, 200), size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


ROW = {
    "sample_id": "vqa-rad:1",
    "image": png(),
    "question": "Is there a pleural effusion?",
    "answer": "Yes",
    "answer_type": "closed",
    "modality": "x-ray",
    "organ": "chest",
    "content_type": "presence",
    "findings": "Small left effusion. Heart size normal. Lungs clear. No pneumothorax.",
    "boxes": [{"label": "effusion", "x1": 0.1, "y1": 0.51234, "x2": 0.4, "y2": 0.9}],
}


def test_target_is_one_json_object_the_parser_accepts_without_repairs():
    text = build_target(ROW)
    r = parse_answer(text)
    assert r.ok and r.repaired == [] and r.errors == []
    assert json.loads(text) == target_dict(ROW)
    assert r.value.answer == "Yes"
    assert r.value.caption == "X-ray image of the chest showing effusion."
    assert r.value.boxes == ((0.1, 0.51, 0.4, 0.9),)  # BOX_DECIMALS


def test_reasoning_uses_findings_sentences_then_states_the_answer():
    steps = target_dict(ROW)["reasoning"]
    assert steps[:3] == ["Small left effusion.", "Heart size normal.", "Lungs clear."]
    assert len(steps) == 4 and steps[-1].endswith(": Yes.") and "presence" in steps[-1]


def test_rows_without_findings_or_boxes_use_labels_and_empty_boxes():
    row = dict(ROW, findings=None, boxes=None, labels=["Cardiomegaly"], modality=None)
    d = target_dict(row)
    assert d["boxes"] == [] and d["caption"] == "Medical image of the chest showing cardiomegaly."
    assert d["reasoning"][0] == "Labelled findings: Cardiomegaly."
    bare = dict(ROW, findings=None, boxes=None, modality=None, organ=None, content_type=None)
    d = target_dict(bare)
    assert d["caption"] == "Medical image." and d["reasoning"] == [
        "The question is answered from the image: Yes."
    ]
    assert parse_answer(build_target(bare)).ok


def test_rows_with_only_boxes_state_the_marked_regions_before_the_answer():
    # SLAKE rows: no findings, no labels, organ and lesion boxes (each label once, in order).
    boxes = [
        {"label": lab, "x1": 0.1, "y1": 0.1, "x2": 0.3, "y2": 0.3}
        for lab in ("Spine", "Kidney", "Kidney", "Lesion")
    ]
    row = dict(ROW, findings=None, labels=None, boxes=boxes, content_type="abnormality")
    d = target_dict(row)
    assert d["reasoning"] == [
        "Marked regions: Spine, Kidney, Lesion.",
        "The abnormality question is answered from the image: Yes.",
    ]
    assert d["boxes"] == []  # no box is named by the question: the regions are text only
    assert d["caption"] == "X-ray image of the chest showing spine, kidney, lesion."


def test_caption_says_what_is_in_the_image_from_the_rows_own_labels():
    labels = ["No Finding", "Pleural Effusion", "Edema", "Atelectasis", "Pneumonia", "Edema",
              "Cardiomegaly"]  # fmt: skip
    row = dict(ROW, labels=labels, question="Is there cardiomegaly?", answer="yes")
    # Labels before box labels; "No Finding" left out; each once; at most MAX_CAPTION_ITEMS.
    assert caption_for(row) == (
        "X-ray image of the chest showing pleural effusion, edema, atelectasis, pneumonia."
    )
    plain = dict(ROW, boxes=None, labels=["No Finding"])
    assert caption_for(plain) == "X-ray image of the chest."
    # Never the question or the answer: the caption of a row depends on its image's fields.
    assert caption_for(dict(ROW, question="What organ is this?", answer="Lung")) == (
        caption_for(ROW)
    )


def test_target_boxes_are_the_evidence_the_counterfactual_paths_inpaint():
    # The SLAKE layout: every organ has a box; the target keeps the box the question names,
    # the same region choice as GRPO's counterfactual reward and the report's flip rates.
    boxes = [
        {"label": lab, "x1": x, "y1": 0.1, "x2": x + 0.2, "y2": 0.3}
        for lab, x in (("Spine", 0.1), ("Kidney", 0.3), ("Kidney", 0.5), ("Lesion", 0.7))
    ]
    row = dict(ROW, findings=None, labels=None, boxes=boxes, question="Where is the lesion?")
    d = target_dict(row)
    assert d["boxes"] == [[0.7, 0.1, 0.9, 0.3]]
    assert d["boxes"] == [[round(v, 2) for v in b] for b in roi_boxes(row, source="reference")]
    kidneys = target_dict(dict(row, question="Does the picture contain kidneys?"))
    assert kidneys["boxes"] == [[0.3, 0.1, 0.5, 0.3], [0.5, 0.1, 0.7, 0.3]]


def test_targets_fit_the_generation_budget_of_every_path(tmp_path):
    """Every target of the synthetic SLAKE set (organ and lesion boxes on every image, the
    demo's size), read and converted by the real readers, fits :data:`MAX_NEW_TOKENS`."""
    from collections import Counter

    from medray.data.config import ImageSettings, SourceSpec, SplitSettings
    from medray.data.readers.slake import read_slake
    from medray.data.synth import generate
    from medray.data.transform import process_record
    from medray.models import load_vlm

    generate("slake", tmp_path / "slake", 40, seed=0, image_size=224)
    spec = SourceSpec(kind="slake", path=str(tmp_path / "slake"), languages=("en",))
    records = read_slake(spec, spec.path, SplitSettings(), Counter())
    rows = [process_record(r, ImageSettings(size=112)) for r in records]
    assert sum(bool(r.get("boxes")) for r in rows) > 150  # of 202 English questions
    tok = load_vlm("tiny-qwen2-vl")[1].tokenizer
    longest = max(len(tok(build_target(r))["input_ids"]) for r in rows)
    assert longest + 1 <= MAX_NEW_TOKENS  # + the end-of-turn token


def test_messages_match_the_serving_prompt_and_carry_the_target():
    msgs = build_messages(ROW, with_answer=False)
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[0]["content"][0]["text"] == SYSTEM_PROMPT
    assert msgs[1]["content"] == [
        {"type": "image"},
        {"type": "text", "text": ROW["question"]},
    ]
    full = build_messages(ROW, with_answer=True)
    assert full[:2] == msgs and full[2]["role"] == "assistant"
    assert full[2]["content"][0]["text"] == build_target(ROW)
    text_only = build_messages(dict(ROW, image=None), with_answer=False)
    assert text_only[1]["content"] == [{"type": "text", "text": ROW["question"]}]


def test_blank_image_keeps_size_and_has_no_content():
    img = row_image(ROW)
    blank = row_image(ROW, blank=True)
    assert img.mode == "RGB" and img.size == blank.size == (24, 16)
    assert img.getextrema() != ((0, 0), (0, 0), (0, 0))
    assert blank.getextrema() == ((0, 0), (0, 0), (0, 0))
    assert row_image(dict(ROW, image=None)) is None


def test_sft_example_is_trl_prompt_completion_with_images():
    ex = sft_example(ROW)
    assert [m["role"] for m in ex["prompt"]] == ["system", "user"]
    assert ex["completion"][0]["role"] == "assistant"
    assert len(ex["images"]) == 1 and ex["images"][0].size == (24, 16)


@pytest.mark.parametrize(
    ("change", "message"),
    [({"question": None}, "no question"), ({"answer": " "}, "no answer")],
)
def test_rows_missing_question_or_answer_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        build_messages(dict(ROW, **change), with_answer=True)


def test_question_prompt_places_the_image_first_and_fills_an_empty_question():
    assert messages("Is there an effusion?", True) == build_messages(
        {"question": "Is there an effusion?", "image": b"x"}, with_answer=False
    )
    for empty in ("", "  ", None):
        assert messages(empty, False)[1]["content"] == [{"type": "text", "text": DEFAULT_QUESTION}]
