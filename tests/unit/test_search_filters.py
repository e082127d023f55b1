"""Search filters as typed: case-insensitive, whole-word fallback, the values listed."""

from __future__ import annotations

import pytest

from medray.retrieval import filters

pytestmark = pytest.mark.unit

KNOWN = {
    "modality": ["ct", "mri", "x-ray"],
    "labels": ["Cardiomegaly", "Lung Lesion", "No Finding", "Pleural Effusion", "Pneumothorax"],
}


def test_parse_groups_values_by_field_and_refuses_malformed_items():
    assert filters.parse(["labels=effusion", "modality=CT", "labels= nodule "]) == {
        "labels": ["effusion", "nodule"],
        "modality": ["CT"],
    }
    for bad in ("labels", "=x", "labels="):
        with pytest.raises(filters.FilterError, match="is not FIELD=VALUE"):
            filters.parse([bad])


def test_values_match_ignoring_case_then_as_whole_words():
    got = filters.resolve({"modality": ["CT"], "labels": ["effusion", "PNEUMOTHORAX"]}, KNOWN)
    assert got == {"modality": ["ct"], "labels": ["Pleural Effusion", "Pneumothorax"]}
    assert filters.resolve({"modality": "X-RAY"}, KNOWN) == {"modality": "x-ray"}
    # whole words only: "ion" is part of "Lesion" but no word of any label
    assert filters.resolve({"labels": "ion"}, KNOWN) == {"labels": "ion"}
    assert filters.resolve({"labels": "lung"}, KNOWN) == {"labels": "Lung Lesion"}


def test_unknown_values_and_fields_pass_through_and_are_reported():
    f = {"labels": ["effusion", "unicorn"], "split": "test"}
    assert filters.resolve(f, KNOWN) == {"labels": ["Pleural Effusion", "unicorn"], "split": "test"}
    assert filters.unmatched(f, KNOWN) == {"labels": ["unicorn"]}


class FakeClient:
    """The one Milvus call ``distinct_values`` makes (a boundary; the real store is used in
    tests/integration/test_retrieval.py)."""

    def __init__(self, rows):
        self.rows = rows

    def query(self, collection, filter, output_fields, limit):
        assert filter == "" and set(output_fields) == {"labels", "modality"}
        return self.rows[:limit]


def test_distinct_values_flattens_arrays_and_says_when_incomplete():
    rows = [
        {"labels": ["Pleural Effusion", "Cardiomegaly"], "modality": "x-ray"},
        {"labels": [], "modality": "ct"},
        {"labels": ["Cardiomegaly"], "modality": None},
    ]
    values, complete = filters.distinct_values(FakeClient(rows), "cases", ["labels", "modality"])
    assert values == {"labels": ["Cardiomegaly", "Pleural Effusion"], "modality": ["ct", "x-ray"]}
    assert complete
    _, complete = filters.distinct_values(
        FakeClient(rows), "cases", ["labels", "modality"], limit=3
    )
    assert not complete
