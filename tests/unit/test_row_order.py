"""``row_order``: the digest the SFT and GRPO workers report of their train rows' order."""

from __future__ import annotations

import pytest

from medray.train.ray_hf import row_order

pytestmark = pytest.mark.unit


def test_same_rows_same_order_same_digest_and_any_swap_changes_it():
    import datasets

    prompts = [f"question {i}" for i in range(10_000)]  # more than one 4,096-row batch
    a = datasets.Dataset.from_dict({"prompt": prompts, "image": [b"x"] * len(prompts)})
    again = datasets.Dataset.from_dict({"prompt": list(prompts)})
    swapped = list(prompts)
    swapped[4095], swapped[4096] = swapped[4096], swapped[4095]  # across the batch edge
    assert row_order(a, "prompt") == row_order(again, "prompt")
    assert row_order(a, "prompt") != row_order(
        datasets.Dataset.from_dict({"prompt": swapped}), "prompt"
    )
    # Values are separated: ["ab", "c"] and ["a", "bc"] differ.
    two = datasets.Dataset.from_dict({"prompt": ["ab", "c"]})
    assert row_order(two, "prompt") != row_order(
        datasets.Dataset.from_dict({"prompt": ["a", "bc"]}), "prompt"
    )
