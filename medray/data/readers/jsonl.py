"""Generic JSONL VQA reader (MEDIQA-style closed VQA with optional answer choices).

One JSON object per line (``datasets/jsonl.md``)::

    {"id": "q1", "image": "images/a.png", "question": "Is there an effusion?",
     "answer": "yes", "choices": ["yes", "no"], "split": "train"}

Required: ``id``, ``question``, ``answer``. Optional: ``image`` (path relative to
``image_root``, default the JSONL's folder; a relative ``image_root`` is resolved like
``path``), ``choices``, ``answer_type``, ``split``,
``task`` (default ``vqa`` with an image, ``mcq`` without), ``modality``, ``organ``,
``language``, ``patient_id``, ``study_id``, ``content_type``, ``context``, ``rationale``,
``labels``, ``boxes`` (``[{label, x1, y1, x2, y2}]`` as fractions of the image),
``findings``, ``impression``. Without ``split`` the row is hashed by patient, else by
image, else by id. ``path`` may be one ``.jsonl`` file or a folder of them.
"""

from __future__ import annotations

import posixpath
from collections import Counter
from collections.abc import Iterator
from typing import Any

from medray.data import io
from medray.data.config import SourceSpec, SplitSettings
from medray.data.readers.text_qa import json_lines
from medray.data.records import (
    LayoutError,
    hash_split,
    missing,
    normalize_answer_type,
    normalize_modality,
    normalize_organ,
    normalize_split,
    record,
    rejected,
    text,
)

REQUIRED = ("id", "question", "answer")
PASS_THROUGH = ("patient_id", "study_id", "context", "rationale", "findings", "impression", "view")


def jsonl_files(spec: SourceSpec, root: str) -> tuple[str, list[str]]:
    """(folder the files are in, the files relative to it)."""
    if io.is_file(root):
        folder, name = root.rsplit("/", 1)
        return folder, [name]
    if spec.files:
        return root, list(spec.files)
    files = [
        f.rsplit("/", 1)[-1] for f in io.list_files(root, recursive=False) if f.endswith(".jsonl")
    ]
    if not files:
        raise LayoutError(f"{root}: no .jsonl files (name them with `files:`)")
    return root, files


def read_jsonl(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per JSONL line."""
    folder, files = jsonl_files(spec, root)
    image_root = io.resolve_location(spec.image_root) if spec.image_root else folder
    langs = set(spec.languages)
    src = spec.source_name
    for fname in files:
        loc = io.join(folder, fname)
        if not io.is_file(loc):
            raise LayoutError(f"{loc}: file not found")
        for lineno, item, err in json_lines(loc):
            where = f"{fname}:{lineno}"
            if err or not isinstance(item, dict):
                yield rejected(
                    src,
                    image_root,
                    where,
                    f"{fname}: {err or f'unreadable row: line {lineno} is not an object'}",
                )
                continue
            oid = text(item.get("id")) or where
            if langs and (item.get("language") or "en") not in langs:
                filtered["language"] += 1
                continue
            gone = missing(item, REQUIRED)
            if gone:
                yield rejected(src, image_root, oid, f"missing field: {gone[0]}", raw=item)
                continue
            image = text(item.get("image"))
            if image:
                image = posixpath.normpath(image)
            choices = item.get("choices")
            if choices is not None and not (
                isinstance(choices, list) and all(isinstance(c, str) for c in choices)
            ):
                yield rejected(
                    src,
                    image_root,
                    oid,
                    "invalid field: choices must be a list of strings",
                    raw=item,
                )
                continue
            task = text(item.get("task")) or ("vqa" if image else "mcq")
            answer = text(item["answer"])
            answer_type = normalize_answer_type(item.get("answer_type"), answer)
            if choices and not item.get("answer_type"):
                answer_type = "choice"
            try:
                the_split = (
                    normalize_split(item["split"])
                    if item.get("split") and split.use_official
                    else None
                )
            except ValueError as e:
                yield rejected(src, image_root, oid, f"invalid field: split ({e})", raw=item)
                continue
            if the_split is None:
                key = text(item.get("patient_id")) or image or oid
                the_split = hash_split(key, split.fractions(), split.salt)
            boxes = item.get("boxes")
            yield record(
                source=src,
                root=image_root,
                original_id=oid,
                task=task,
                split=the_split,
                image=image,
                question=text(item["question"]),
                answer=answer,
                answer_type=answer_type,
                choices=choices,
                modality=normalize_modality(item.get("modality")),
                organ=normalize_organ(item.get("organ")),
                language=text(item.get("language")) or "en",
                content_type=text(item.get("content_type")),
                labels=item.get("labels"),
                boxes=boxes,
                box_units="norm" if boxes else None,
                **{k: text(item.get(k)) for k in PASS_THROUGH},
            )
