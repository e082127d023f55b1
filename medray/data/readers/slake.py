"""SLAKE reader: ``train.json`` / ``validate.json`` / ``test.json`` + ``imgs/xmlabN/``.

Each JSON file is a list of questions with the original fields ``img_id``, ``img_name``
(``xmlabN/source.jpg``, relative to ``imgs/``), ``question``, ``answer``, ``q_lang``
(``en`` / ``zh``), ``location``, ``modality``, ``answer_type``, ``base_type``,
``content_type``, ``triple``, ``qid``. The image folder also holds ``detection.json``
(a list of ``{label: [x, y, w, h]}`` boxes in pixels), read by the transform next to
the image. The split is the file the question comes from. One row per question;
``languages`` keeps only some ``q_lang`` values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

from medray.data import io
from medray.data.config import SourceSpec, SplitSettings
from medray.data.readers.vqa_rad import load_json_list
from medray.data.records import (
    LayoutError,
    hash_split,
    missing,
    normalize_answer_type,
    normalize_modality,
    normalize_organ,
    record,
    rejected,
    text,
)

FILES = {"train.json": "train", "validate.json": "validation", "test.json": "test"}
REQUIRED = ("qid", "img_name", "question", "answer")


def read_slake(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per SLAKE question; count language-filtered rows in ``filtered``."""
    present = [f for f in FILES if io.is_file(io.join(root, f))]
    if not present:
        raise LayoutError(f"{root}: not a SLAKE folder: expected {list(FILES)}")
    src = spec.source_name
    langs = set(spec.languages)
    for fname in present:
        for pos, item in enumerate(load_json_list(io.join(root, fname))):
            if not isinstance(item, dict):
                yield rejected(
                    src,
                    root,
                    f"{fname}#{pos}",
                    f"unreadable row: {fname} element {pos} is not an object",
                )
                continue
            oid = text(item.get("qid")) or f"{fname}#{pos}"
            if langs and item.get("q_lang") not in langs:
                filtered["language"] += 1
                continue
            gone = missing(item, REQUIRED)
            if gone:
                yield rejected(src, root, oid, f"missing field: {gone[0]}", raw=item)
                continue
            folder = str(item["img_name"]).rsplit("/", 1)[0]
            image = f"imgs/{item['img_name']}"
            official = FILES[fname]
            the_split = (
                official if split.use_official else hash_split(image, split.fractions(), split.salt)
            )
            answer = text(item["answer"])
            yield record(
                source=src,
                root=root,
                original_id=oid,
                task="vqa",
                split=the_split,
                image=image,
                detection=f"imgs/{folder}/detection.json",
                question=text(item["question"]),
                answer=answer,
                answer_type=normalize_answer_type(item.get("answer_type"), answer),
                modality=normalize_modality(item.get("modality")),
                organ=normalize_organ(item.get("location")),
                content_type=(text(item.get("content_type")) or "").lower() or None,
                language=text(item.get("q_lang")) or "en",
                extra={
                    k: item[k]
                    for k in ("img_id", "base_type", "triple", "location", "modality")
                    if k in item
                },
            )
