"""The summariser's and the medical-QA model's contracts: prompts, targets, parsers."""

from __future__ import annotations

import pytest

from medray.contracts import medqa, summariser

pytestmark = pytest.mark.unit


def test_summariser_prompt_numbers_the_steps_and_training_and_serving_agree():
    findings = "Blunted left costophrenic angle. Heart size normal."
    trained = summariser.prompt(summariser.steps_from_findings(findings))
    assert trained == (
        "Reasoning steps:\n1. Blunted left costophrenic angle.\n2. Heart size normal."
        "\nDiagnosis summary:"
    )
    # The served summariser gets the reasoner's steps: the same steps give the same prompt.
    served = summariser.prompt(
        summariser.steps_from_answer(
            "X-ray.", ["Blunted left costophrenic angle.", "Heart size normal."], "yes"
        )
    )
    assert served == trained
    assert summariser.steps_from_answer("Chest X-ray.", [], "effusion") == [
        "Chest X-ray.",
        "effusion",
    ]
    assert summariser.target({"impression": " Small left\n effusion. "}) == " Small left effusion."
    with pytest.raises(ValueError, match="at least one reasoning step"):
        summariser.prompt([])


def test_medqa_prompt_target_and_parser_round_trip():
    row = {
        "question": "Drug of choice for absence seizures?",
        "choices": ["Phenytoin", "Ethosuximide", "Carbamazepine"],
        "answer": "Ethosuximide",
        "rationale": "First line  in children.",
    }
    p = medqa.prompt(row["question"], row["choices"])
    assert p.endswith("Options:\nA. Phenytoin\nB. Ethosuximide\nC. Carbamazepine\nAnswer:")
    t = medqa.target(row)
    assert t == " B. Ethosuximide\nExplanation: First line in children."
    parsed = medqa.parse(t, has_choices=True)
    assert (parsed.letter, parsed.answer, parsed.explanation) == (
        "B",
        "B. Ethosuximide",
        "First line in children.",
    )
    assert (
        medqa.prompt("What is pleural effusion?") == "Question: What is pleural effusion?\nAnswer:"
    )
    free = medqa.parse(" A collection of fluid in the pleural space.")
    assert free.letter is None and free.answer.startswith("A collection")
    with pytest.raises(ValueError, match="needs a question"):
        medqa.prompt("  ")
