"""The text an image-report pair is embedded by, with the nulls Parquet hands back."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from medray.models.encoders import report_text

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("null", [None, pd.NA, math.nan])
def test_null_sections_are_empty_not_errors(null):
    assert report_text(null, " Cardiomegaly. ") == "IMPRESSION: Cardiomegaly."
    assert report_text("Enlarged heart.", null, "impression") == "Enlarged heart."
    assert report_text(null, null) == ""


def test_sections_and_fallbacks():
    assert report_text("F.", "I.") == "FINDINGS: F. IMPRESSION: I."
    assert report_text("F.", "I.", "findings") == "F."
    assert report_text("", "I.", "findings") == "I."
    assert report_text("F.", "  ", "impression") == "F."


def test_pandas_batch_with_missing_impression():
    """A string column with a null, as Ray Data's pandas batches carry it."""
    col = pd.Series(["Cardiomegaly.", None], dtype="string")
    assert col[1] is pd.NA
    assert [report_text("Heart enlarged.", i) for i in col] == [
        "FINDINGS: Heart enlarged. IMPRESSION: Cardiomegaly.",
        "FINDINGS: Heart enlarged.",
    ]
