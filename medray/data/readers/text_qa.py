"""Readers for text multiple-choice QA: MedMCQA (JSON lines) and PubMedQA (PQA-L JSON).

MedMCQA (``datasets/medmcqa.md``): ``train.json`` / ``dev.json`` / ``test.json``, one JSON
object per line with ``id, question, opa, opb, opc, opd, cop, choice_type, exp,
subject_name, topic_name``. ``cop`` is the correct option, 1-4 in the original release
(0-3 in Hugging Face exports: ``cop_base: 0``). The public ``test.json`` has no answers,
so the default files are ``train.json`` and ``dev.json`` (dev -> validation).

PubMedQA PQA-L: ``ori_pqal.json`` (or ``data/ori_pqal.json``), an object keyed by PubMed
id with ``QUESTION, CONTEXTS, LABELS, MESHES, YEAR, final_decision, LONG_ANSWER``.
Rows become yes/no/maybe choice questions with the abstract as context. A
``test_ground_truth.json`` beside it, when present, marks the official test set.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from medray.data import io
from medray.data.config import SourceSpec, SplitSettings
from medray.data.records import (
    LayoutError,
    hash_split,
    missing,
    normalize_split,
    record,
    rejected,
    text,
)

MEDMCQA_DEFAULT_FILES = ("train.json", "dev.json")
MEDMCQA_REQUIRED = ("id", "question", "opa", "opb", "opc", "opd", "cop")
PUBMEDQA_CHOICES = ["yes", "no", "maybe"]


def split_from_filename(name: str) -> str | None:
    """``train.json`` -> train, ``dev.jsonl`` -> validation, ``test_x.json`` -> test."""
    stem = name.rsplit("/", 1)[-1].split(".", 1)[0].lower()
    for part in (stem, *stem.replace("-", "_").split("_")):
        try:
            return normalize_split(part)
        except ValueError:
            continue
    return None


def json_lines(location: str) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, parsed object or None, error or None)`` for each non-blank line."""
    try:
        content = io.read_text(location)
    except UnicodeDecodeError as e:
        raise LayoutError(f"{location}: not UTF-8 text ({e})") from e
    for lineno, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield lineno, json.loads(line), None
        except ValueError as e:
            yield lineno, None, f"unreadable row: line {lineno}: {e}"


def read_medmcqa(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per MedMCQA question (task ``mcq``)."""
    files = spec.files or MEDMCQA_DEFAULT_FILES
    present = [f for f in files if io.is_file(io.join(root, f))]
    if not present:
        raise LayoutError(f"{root}: not a MedMCQA folder: none of {list(files)} exists")
    src = spec.source_name
    for fname in present:
        official = split_from_filename(fname)
        for lineno, item, err in json_lines(io.join(root, fname)):
            where = f"{fname}:{lineno}"
            if err or not isinstance(item, dict):
                yield rejected(
                    src,
                    root,
                    where,
                    f"{fname}: {err or f'unreadable row: line {lineno} is not an object'}",
                )
                continue
            oid = text(item.get("id")) or where
            gone = missing(item, MEDMCQA_REQUIRED)
            if gone:
                yield rejected(src, root, oid, f"missing field: {gone[0]}", raw=item)
                continue
            choices = [text(item[k]) or "" for k in ("opa", "opb", "opc", "opd")]
            try:
                answer = choices[int(item["cop"]) - spec.cop_base]
                if int(item["cop"]) - spec.cop_base < 0:
                    raise IndexError
            except (ValueError, IndexError):
                yield rejected(
                    src,
                    root,
                    oid,
                    f"invalid field: cop={item['cop']!r} (cop_base {spec.cop_base})",
                    raw=item,
                )
                continue
            the_split = (
                official
                if official and split.use_official
                else hash_split(oid, split.fractions(), split.salt)
            )
            yield record(
                source=src,
                root=root,
                original_id=oid,
                task="mcq",
                split=the_split,
                question=text(item["question"]),
                answer=answer,
                answer_type="choice",
                choices=choices,
                rationale=text(item.get("exp")),
                content_type=(text(item.get("subject_name")) or "").lower() or None,
                language="en",
                extra={
                    k: item[k]
                    for k in ("subject_name", "topic_name", "choice_type", "cop")
                    if k in item
                },
            )


def read_pubmedqa(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per PubMedQA PQA-L question (task ``mcq``, yes/no/maybe)."""
    for rel in ("ori_pqal.json", "data/ori_pqal.json"):
        loc = io.join(root, rel)
        if io.is_file(loc):
            break
    else:
        raise LayoutError(f"{root}: not a PubMedQA folder: ori_pqal.json is missing")
    try:
        data = json.loads(io.read_text(loc))
    except ValueError as e:
        raise LayoutError(f"{loc}: not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise LayoutError(f"{loc}: expected an object keyed by PubMed id")
    truth_loc = io.join(loc.rsplit("/", 1)[0], "test_ground_truth.json")
    test_ids = set(json.loads(io.read_text(truth_loc))) if io.is_file(truth_loc) else set()
    fractions = split.fractions()
    if test_ids:  # the official test set is given; hash the rest into train/validation
        fractions = {**fractions, "test": 0.0}
    src = spec.source_name
    for pmid, item in data.items():
        if not isinstance(item, dict):
            yield rejected(src, root, pmid, "unreadable row: value is not an object")
            continue
        gone = missing(item, ("QUESTION", "final_decision"))
        if gone:
            yield rejected(src, root, pmid, f"missing field: {gone[0]}", raw=item)
            continue
        answer = str(item["final_decision"]).strip().lower()
        if pmid in test_ids and split.use_official:
            the_split = "test"
        else:
            the_split = hash_split(pmid, fractions, split.salt)
        contexts = item.get("CONTEXTS") or []
        yield record(
            source=src,
            root=root,
            original_id=pmid,
            task="mcq",
            split=the_split,
            question=text(item["QUESTION"]),
            answer=answer,
            answer_type="choice",
            choices=list(PUBMEDQA_CHOICES),
            context="\n".join(str(c) for c in contexts) or None,
            rationale=text(item.get("LONG_ANSWER")),
            language="en",
            extra={k: item[k] for k in ("LABELS", "MESHES", "YEAR") if k in item},
        )
