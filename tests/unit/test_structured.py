"""The structured-output parser: good, repairable and irreparable answers, and streaming."""

from __future__ import annotations

import json

import pytest

from medray.step_stream import StepStreamer
from medray.structured import ParseResult, ReasonerOutput, parse_answer

pytestmark = pytest.mark.unit

GOOD = {
    "caption": "Frontal chest radiograph.",
    "reasoning": ["The lungs are clear.", "The heart is not enlarged."],
    "boxes": [[0.1, 0.2, 0.5, 0.6]],
    "answer": "no",
}


def test_a_valid_answer_parses_without_repairs():
    r = parse_answer(json.dumps(GOOD))
    assert r.ok and r.repaired == [] and r.errors == []
    assert r.value == ReasonerOutput(
        caption="Frontal chest radiograph.",
        reasoning=("The lungs are clear.", "The heart is not enlarged."),
        boxes=((0.1, 0.2, 0.5, 0.6),),
        answer="no",
    )
    assert r.value.to_dict() == GOOD
    assert r.to_dict()["value"] == GOOD


def test_unicode_and_escapes_survive():
    d = dict(GOOD, caption='He said "effusion"\nnext line', answer="ja, Ödem")
    r = parse_answer(json.dumps(d, ensure_ascii=True))
    assert r.ok and r.value.caption == 'He said "effusion"\nnext line'
    assert r.value.answer == "ja, Ödem"


# (text, expected value fields, a phrase that must be among the repairs)
REPAIRABLE = [
    (
        "Here is my answer:\n```json\n" + json.dumps(GOOD) + "\n```\nHope it helps.",
        {"answer": "no"},
        "removed Markdown code fences",
    ),
    ("Answer: " + json.dumps(GOOD) + " done", {"answer": "no"}, "ignored text around"),
    (
        '{"caption": "c", "reasoning": ["a", "b",], "boxes": [], "answer": "yes",}',
        {"reasoning": ("a", "b")},
        "trailing comma",
    ),
    (
        "{'caption': 'c', 'reasoning': ['a'], 'boxes': [], 'answer': 'yes'}",
        {"caption": "c", "answer": "yes"},
        "single-quoted",
    ),
    (
        '{caption: "c", reasoning: ["a"], boxes: [], answer: "yes"}',
        {"caption": "c"},
        "unquoted keys",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [], "answer": "yes"',
        {"answer": "yes"},
        "missing closing '}'",
    ),
    (
        '{"caption": "c", "reasoning": ["a", "b"], "boxes": [[0.1, 0.1, 0.2, 0.2]], "answer": "pneumo',
        {"answer": "pneumo"},
        "closed an unterminated string",
    ),
    (
        '{"caption": "c", "reasoning": "First the lungs. Then the heart! Finally bones?", "boxes": [], "answer": "a"}',
        {"reasoning": ("First the lungs.", "Then the heart!", "Finally bones?")},
        "split string 'reasoning' into 3 steps",
    ),
    (
        '{"caption": "c", "reasoning": "1. lungs clear\\n2. heart normal", "boxes": [], "answer": "a"}',
        {"reasoning": ("lungs clear", "heart normal")},
        "split string 'reasoning' into 2 steps",
    ),
    (
        '{"Caption": "c", "Steps": ["a"], "bbox": [], "Final Answer": "yes"}',
        {"reasoning": ("a",), "answer": "yes"},
        "renamed key 'Steps' to 'reasoning'",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [0.1, 0.2, 0.3, 0.4], "answer": "x"}',
        {"boxes": ((0.1, 0.2, 0.3, 0.4),)},
        "wrapped a single flat box",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [[0.5, 0.6, 0.1, 0.2]], "answer": "x"}',
        {"boxes": ((0.1, 0.2, 0.5, 0.6),)},
        "swapped corners",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [[-0.01, 0.0, 1.01, 1.0]], "answer": "x"}',
        {"boxes": ((0.0, 0.0, 1.0, 1.0),)},
        "clamped coordinates",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "answer": "x"}',
        {"boxes": ()},
        "missing key 'boxes'; assumed no boxes",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [], "answer": True}',
        {"answer": "yes"},
        "Python literal True",
    ),
    (
        '{"caption": "c", "reasoning": ["a", 3], "boxes": [], "answer": 42}',
        {"reasoning": ("a", "3"), "answer": "42"},
        "converted numeric answer to text",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [], "answer": "x", "confidence": 0.9}',
        {"answer": "x"},
        "ignored unknown key 'confidence'",
    ),
    (
        '{"caption": "c", // a comment\n "reasoning": ["a"], "boxes": [], "answer": "x"}',
        {"answer": "x"},
        "removed comments",
    ),
    (
        '{"caption": "c", "reasoning": [{"step": "a"}], "boxes": [{"x1": 0.1, "y1": 0.1, "x2": 0.2, "y2": 0.3}], "answer": "x"}',
        {"reasoning": ("a",), "boxes": ((0.1, 0.1, 0.2, 0.3),)},
        "unwrapped a one-key object",
    ),
]


@pytest.mark.parametrize("text,expected,phrase", REPAIRABLE, ids=[r[2] for r in REPAIRABLE])
def test_repairable_answers_are_repaired_and_reported(text, expected, phrase):
    r = parse_answer(text)
    assert r.ok, r.errors
    for k, v in expected.items():
        assert getattr(r.value, k) == v
    assert any(phrase in line for line in r.repaired), r.repaired


def test_pixel_boxes_are_normalised_with_the_image_size():
    text = json.dumps(dict(GOOD, boxes=[[56, 28, 112, 84]]))
    r = parse_answer(text, image_size=(112, 112))
    assert r.ok
    assert r.value.boxes == ((0.5, 0.25, 1.0, 0.75),)
    assert any("pixel boxes" in x and "112x112" in x for x in r.repaired)


def test_pixel_boxes_without_image_size_are_dropped_with_an_error():
    r = parse_answer(json.dumps(dict(GOOD, boxes=[[56, 28, 112, 84]])))
    assert not r.ok and r.value.boxes == ()
    assert any("pixel coordinates" in e and "image size is unknown" in e for e in r.errors)


IRREPARABLE = [
    ("", "no JSON object found"),
    ("The answer is yes.", "no JSON object found"),
    ("[1, 2, 3]", "no JSON object found"),
    ('{"caption": "c", "reasoning": ["a"], "boxes": [], "answer" "x"}', "expected ':'"),
    ('{"caption": "c" "reasoning": ["a"]}', "expected ',' or '}'"),
    ('{"caption": @}', "unexpected character '@'"),
    ('{"reasoning": ["a"], "boxes": [], "answer": "x"}', "missing required key 'caption'"),
    ('{"caption": "c", "boxes": [], "answer": "x"}', "missing required key 'reasoning'"),
    ('{"caption": "c", "reasoning": ["a"], "boxes": []}', "missing required key 'answer'"),
    ('{"caption": "c", "reasoning": ["a"], "boxes": [], "answer": ""}', "answer is empty"),
    ('{"caption": "c", "reasoning": ["a"], "boxes": [], "answer": null}', "answer is null"),
    ('{"caption": "c", "reasoning": [], "boxes": [], "answer": "x"}', "reasoning has no steps"),
    (
        '{"caption": "c", "reasoning": 7, "boxes": [], "answer": "x"}',
        "reasoning must be a list of strings, got int",
    ),
    (
        '{"caption": ["c"], "reasoning": ["a"], "boxes": [], "answer": "x"}',
        "caption must be a string, got list",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [[0.1, 0.2, 0.3]], "answer": "x"}',
        "boxes[0] dropped: expected 4 numbers",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [["a", 0, 1, 1]], "answer": "x"}',
        "coordinates must be numbers",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": [[-0.5, 0, 1, 1]], "answer": "x"}',
        "negative coordinates",
    ),
    (
        '{"caption": "c", "reasoning": ["a"], "boxes": "none", "answer": "x"}',
        "boxes must be a list",
    ),
    ('{"caption": "c", "reasoning": ["a"], "answer": ', "missing required key 'answer'"),
]


@pytest.mark.parametrize("text,error", IRREPARABLE, ids=[e for _, e in IRREPARABLE])
def test_irreparable_answers_say_what_is_wrong(text, error):
    r = parse_answer(text)
    assert not r.ok
    assert any(error in e for e in r.errors), r.errors


def test_an_object_without_our_fields_is_reported():
    r = parse_answer('prefix {"a": 1} suffix')
    assert not r.ok and r.value is not None
    assert "missing required key 'caption'" in r.errors[0]


def test_partial_value_is_kept_when_some_fields_are_bad():
    r = parse_answer('{"caption": "c", "reasoning": ["a", "b"], "boxes": [[1, 2]], "answer": "x"}')
    assert not r.ok
    assert r.value.reasoning == ("a", "b") and r.value.answer == "x" and r.value.boxes == ()


def test_pixel_boxes_outside_the_image_are_dropped():
    r = parse_answer(json.dumps(dict(GOOD, boxes=[[10, 10, 500, 50]])), image_size=(112, 112))
    assert not r.ok and any("outside the 112x112 image" in e for e in r.errors)


def test_non_text_input_is_an_error_not_an_exception():
    r = parse_answer(None)  # type: ignore[arg-type]
    assert isinstance(r, ParseResult) and not r.ok and "expected text" in r.errors[0]


def test_the_first_object_wins():
    a = json.dumps(dict(GOOD, answer="first"))
    b = json.dumps(dict(GOOD, answer="second"))
    assert parse_answer(a + "\n" + b).value.answer == "first"


# ---------------------------------------------------------------- streaming


def chunks(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


@pytest.mark.parametrize("size", [1, 3, 7, 1000])
def test_streamer_emits_each_step_when_it_closes(size):
    text = "Sure: " + json.dumps(GOOD)
    s = StepStreamer()
    seen: list[tuple[int, str, str]] = []  # (chars fed when emitted, kind, text)
    fed = 0
    for c in chunks(text, size):
        fed += len(c)
        for e in s.feed(c):
            seen.append((fed, e.kind, e.text))
    assert [(k, t) for _, k, t in seen] == [
        ("caption", GOOD["caption"]),
        ("step", GOOD["reasoning"][0]),
        ("step", GOOD["reasoning"][1]),
        ("answer", "no"),
    ]
    # The first step is emitted as soon as its string closes, long before the end.
    first_step_end = text.index(GOOD["reasoning"][0]) + len(GOOD["reasoning"][0]) + 1
    assert seen[1][0] < first_step_end + size
    assert seen[1][0] < len(text) or size >= len(text)
    assert s.complete
    final = s.finish()
    assert final.ok and list(final.value.reasoning) == GOOD["reasoning"]


def test_streamer_step_indices_and_string_reasoning():
    s = StepStreamer()
    events = s.feed('{"caption": "c", "reasoning": "One. Two.", "answer": "x"}')
    steps = [e for e in events if e.kind == "step"]
    assert [(e.index, e.text) for e in steps] == [(0, "One."), (1, "Two.")]
    assert steps[0].to_dict() == {"kind": "step", "text": "One.", "index": 0}


def test_streamer_ignores_strings_in_boxes_and_keys_and_handles_escapes():
    text = '{"caption": "a \\"quoted\\" word", "boxes": [["x"]], "reasoning": ["s\\u00e9"], "answer": "y"}'
    events = StepStreamer().feed(text)
    assert [(e.kind, e.text) for e in events] == [
        ("caption", 'a "quoted" word'),
        ("step", "sé"),
        ("answer", "y"),
    ]


def test_streamer_on_gibberish_emits_nothing_and_finish_reports_errors():
    s = StepStreamer()
    assert s.feed("\n\n lorem ipsum ") == []
    r = s.finish()
    assert not r.ok and r.errors == ["no JSON object found in the answer"]


def test_streamer_on_truncated_output_repairs_at_finish():
    s = StepStreamer()
    events = s.feed('{"caption": "c", "reasoning": ["one", "tw')
    assert [e.text for e in events] == ["c", "one"]
    r = s.finish()
    assert r.value.reasoning == ("one", "tw")
    assert not r.ok and "missing required key 'answer'" in r.errors


def test_the_module_examples_run_as_written():
    # The docstrings are the parser's documentation: their examples must hold.
    import doctest

    import medray.lenient_json
    import medray.step_stream
    import medray.structured

    for mod in (medray.structured, medray.step_stream, medray.lenient_json):
        result = doctest.testmod(mod)
        assert result.failed == 0, f"{mod.__name__}: {result.failed} example(s) failed"
    assert doctest.testmod(medray.structured).attempted > 0
