"""``medray.retrieval.rows.case_rows``: the rows CaseStore.upsert takes, from images + reports."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from medray.retrieval.rows import case_rows

pytestmark = pytest.mark.unit


class _Clip:
    """Deterministic CLIP stand-in: the boundary here is the row layout, not the model."""

    def clip_images(self, images):
        return np.array([[float(im.getpixel((0, 0))[0]), 1.0] for im in images])

    def clip_texts(self, texts):
        return np.array([[float(len(t)), 2.0] for t in texts])


def test_rows_pair_each_image_with_its_report_and_labels():
    images = [Image.new("RGB", (4, 4), (v, 0, 0)) for v in (10, 20)]
    rows = case_rows(_Clip(), images, ["a", "bbb"], [["effusion"], []], id_prefix="x", source="t")
    assert [r["sample_id"] for r in rows] == ["x-0", "x-1"]
    assert rows[1]["image_vec"] == [20.0, 1.0] and rows[1]["text_vec"] == [3.0, 2.0]
    assert rows[0]["labels"] == ["effusion"] and rows[1]["labels"] == []
    assert rows[0]["study_id"] == "x-s0" and rows[0]["source"] == "t"
    assert {r["modality"] for r in rows} == {"X-Ray"} and {r["split"] for r in rows} == {"test"}


def test_mismatched_lengths_are_refused_with_the_counts():
    with pytest.raises(ValueError, match="2 images, 1 reports and 2 label lists"):
        case_rows(
            _Clip(), [Image.new("RGB", (4, 4))] * 2, ["a"], [[], []], id_prefix="x", source="t"
        )
