"""Case rows from images and their reports, ready for :meth:`CaseStore.upsert`.

For indexing a handful of cases outside ``jobs/index.py`` (which embeds a preprocessed
dataset with Ray Data): a notebook, the serve benchmark, the served-app tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image


def case_rows(
    embedder: Any,
    images: Sequence[Image.Image],
    reports: Sequence[str],
    labels: Sequence[Sequence[str]],
    *,
    id_prefix: str,
    source: str,
    modality: str = "X-Ray",
    organ: str = "chest",
    split: str = "test",
) -> list[dict[str, Any]]:
    """One row per image: its CLIP image vector, its report's CLIP text vector (both from
    ``embedder.clip_images`` / ``clip_texts``), the report, labels and metadata; sample ids
    ``{id_prefix}-{i}``, study ids ``{id_prefix}-s{i}``."""
    if not len(images) == len(reports) == len(labels):
        raise ValueError(
            f"{len(images)} images, {len(reports)} reports and {len(labels)} label lists: "
            "one of each per case"
        )
    iv, tv = embedder.clip_images(list(images)), embedder.clip_texts(list(reports))
    return [
        {
            "sample_id": f"{id_prefix}-{i}",
            "image_vec": iv[i].tolist(),
            "text_vec": tv[i].tolist(),
            "report": reports[i],
            "labels": list(labels[i]),
            "modality": modality,
            "organ": organ,
            "split": split,
            "source": source,
            "study_id": f"{id_prefix}-s{i}",
        }
        for i in range(len(images))
    ]
