"""VQA-RAD reader: the OSF release and the MEVF ``data_RAD`` split.

Two layouts are in use (``datasets/vqa_rad.md``):

* OSF (the authors' release): ``VQA_RAD Dataset Public.json`` plus
  ``VQA_RAD Image Folder/``. The official test set is the questions whose
  ``phrase_type`` starts with ``test`` (``test_freeform``, ``test_para``).
* MEVF ``data_RAD``: ``trainset.json`` / ``testset.json`` plus ``images/``.

Both are JSON lists with the original field names (``qid``, ``image_name``,
``image_organ``, ``question``, ``answer``, ``answer_type``, ``question_type``,
``phrase_type``). Values keep their quirks: answers may be numbers, ``answer_type`` may
carry a trailing space. One row per question.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Iterator
from typing import Any

from medray.data import io
from medray.data.config import SourceSpec, SplitSettings
from medray.data.records import (
    LayoutError,
    hash_split,
    missing,
    normalize_answer_type,
    normalize_organ,
    record,
    rejected,
    text,
)

log = logging.getLogger(__name__)

OSF_JSON = "VQA_RAD Dataset Public.json"
OSF_IMAGES = "VQA_RAD Image Folder"
MEVF_FILES = {"trainset.json": "train", "testset.json": "test"}
REQUIRED = ("qid", "image_name", "question", "answer")


def detect_layout(root: str) -> str:
    """``"osf"`` or ``"mevf"``; raise :class:`LayoutError` when neither is there."""
    if io.is_file(io.join(root, OSF_JSON)):
        return "osf"
    if io.is_file(io.join(root, "trainset.json")) or io.is_file(io.join(root, "testset.json")):
        return "mevf"
    raise LayoutError(
        f"{root}: not a VQA-RAD folder: expected {OSF_JSON!r} (OSF release) or "
        "trainset.json/testset.json (MEVF data_RAD split)"
    )


def load_json_list(location: str) -> list[Any]:
    """A JSON file holding one list; a clear error when it is not."""
    try:
        data = json.loads(io.read_text(location))
    except FileNotFoundError:
        raise
    except (ValueError, UnicodeDecodeError) as e:
        raise LayoutError(f"{location}: not valid JSON ({e}); the file is unreadable") from e
    if not isinstance(data, list):
        raise LayoutError(f"{location}: expected a JSON list of records, got {type(data).__name__}")
    return data


def read_vqa_rad(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per VQA-RAD question (see :mod:`medray.data.records`)."""
    layout = detect_layout(root)
    if layout == "osf":
        items = [(item, None) for item in load_json_list(io.join(root, OSF_JSON))]
        image_dir = OSF_IMAGES
    else:
        items = []
        for name, official in MEVF_FILES.items():
            loc = io.join(root, name)
            if io.is_file(loc):
                items += [(item, official) for item in load_json_list(loc)]
        image_dir = "images"
    src = spec.source_name
    for pos, (item, official) in enumerate(items):
        if not isinstance(item, dict):
            yield rejected(src, root, f"#{pos}", f"unreadable row: element {pos} is not an object")
            continue
        oid = text(item.get("qid")) or f"#{pos}"
        gone = missing(item, REQUIRED)
        if gone:
            yield rejected(src, root, oid, f"missing field: {gone[0]}", raw=item)
            continue
        phrase = text(item.get("phrase_type")) or ""
        if official is None:  # OSF: the test set is marked in phrase_type
            official = "test" if phrase.startswith("test") else "train"
        image = f"{image_dir}/{item['image_name']}"
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
            question=text(item["question"]),
            answer=answer,
            answer_type=normalize_answer_type(item.get("answer_type"), answer),
            organ=normalize_organ(item.get("image_organ")),
            content_type=(text(item.get("question_type")) or "").lower() or None,
            language="en",
            extra={
                k: item[k] for k in ("phrase_type", "question_type", "image_organ") if k in item
            },
        )
