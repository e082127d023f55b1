"""The unified schema: one definition, documented in datasets/SCHEMA.md, enforced by value rules."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pytest

from medray.data.schema import (
    COLUMNS,
    FIELDS,
    SCHEMA,
    SchemaError,
    check_schema,
    row_errors,
    table_from_rows,
    validate_table,
)

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]


def good_vqa(**over):
    row = {
        "sample_id": "vqa-rad:1",
        "source": "vqa-rad",
        "original_id": "1",
        "split": "train",
        "task": "vqa",
        "image": b"\xff\xd8fake",
        "image_format": "jpeg",
        "image_sha256": "a" * 64,
        "image_width": 224,
        "image_height": 224,
        "question": "Is there a pleural effusion?",
        "answer": "Yes",
        "answer_type": "closed",
        "boxes": [{"label": "effusion", "x1": 0.1, "y1": 0.5, "x2": 0.4, "y2": 0.9}],
    }
    row.update(over)
    return row


def test_schema_md_documents_every_field_with_its_type():
    doc = (REPO / "datasets" / "SCHEMA.md").read_text()
    documented = re.findall(r"^\| `([a-z_0-9]+)` \| `([^`]+)` \|", doc, re.MULTILINE)
    assert [name for name, _ in documented] == list(COLUMNS), (
        "SCHEMA.md must list the fields in order"
    )
    for (name, typ), (fname, ftype, _, _) in zip(documented, FIELDS, strict=True):
        assert name == fname and typ == str(ftype), (name, typ, str(ftype))


def test_a_valid_row_passes_and_round_trips_through_a_table():
    assert row_errors(good_vqa()) == []
    table = table_from_rows([good_vqa()])
    validate_table(table)
    assert table.schema.equals(SCHEMA)
    assert table.column("boxes")[0].as_py()[0]["label"] == "effusion"


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"answer": None}, "missing field: answer"),
        ({"split": "dev"}, "split 'dev' is not one of"),
        ({"task": "caption"}, "task 'caption' is not one of"),
        ({"image": None, "image_format": None, "image_sha256": None}, "vqa rows need an image"),
        ({"image_sha256": "XYZ"}, "64 lower-case hex"),
        ({"answer_type": "CLOSED"}, "answer_type 'CLOSED'"),
        ({"boxes": [{"label": "x", "x1": 0.5, "y1": 0.1, "x2": 0.4, "y2": 0.2}]}, "x1 < x2"),
        ({"boxes": [{"label": "x", "x1": 0.1, "y1": 0.1, "x2": 1.4, "y2": 0.2}]}, "in [0, 1]"),
        ({"boxes": [{"label": "", "x1": 0.1, "y1": 0.1, "x2": 0.4, "y2": 0.2}]}, "missing label"),
        ({"answer_type": "choice", "choices": ["a", "b"], "answer": "c"}, "not one of the choices"),
    ],
)
def test_value_rules_name_the_problem(change, error):
    errs = row_errors(good_vqa(**change))
    assert any(error in e for e in errs), errs


def test_report_and_mcq_rules():
    report = good_vqa(task="report", question=None, answer=None, answer_type=None)
    assert "report has neither findings nor impression" in row_errors(report)
    assert row_errors({**report, "impression": "No acute process."}) == []
    mcq = {
        "sample_id": "m:1",
        "source": "m",
        "original_id": "1",
        "split": "test",
        "task": "mcq",
        "question": "Q?",
        "answer": "b",
        "answer_type": "choice",
    }
    assert "missing field: choices (mcq rows need answer options)" in row_errors(mcq)
    assert row_errors({**mcq, "choices": ["a", "b"]}) == []


def test_validate_table_rejects_wrong_types_missing_columns_and_nulls():
    table = table_from_rows([good_vqa()])
    with pytest.raises(SchemaError, match="missing \\['labels'\\]"):
        check_schema(table.drop_columns(["labels"]).schema)
    bad_type = table.set_column(
        COLUMNS.index("image_width"),
        pa.field("image_width", pa.int64()),
        pa.array([224], pa.int64()),
    )
    with pytest.raises(SchemaError, match="'image_width' has type int64"):
        validate_table(bad_type)
    with pytest.raises(SchemaError, match="row 'vqa-rad:1': missing field: answer"):
        validate_table(table_from_rows([good_vqa(answer=None)]))
    with pytest.raises(SchemaError, match="'split' has nulls"):
        validate_table(table_from_rows([good_vqa(split=None)]))
