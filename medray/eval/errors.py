"""Error analysis: what kind of failure each prediction row shows, counted per run, with advice.

A row can show several kinds at once (a verbose answer can also be wrong). The kinds, in
the order they are checked:

==================  =========================================================================
unreadable_image    the row's image could not be read (``error`` starts with ``image``)
unusable_input      the model's contract cannot use the row (``error`` starts with ``input``:
                    a report without findings, a question without options)
inference_error     inference failed for another reason (``error`` says why)
invalid_json        a VQA output did not parse into the structured answer
empty_answer        no answer (or no generated text on a generation row)
refusal             the model declined ("I cannot determine ...", "consult a radiologist")
not_yes_no          a closed yes/no question answered with neither yes nor no
verbose_answer      a closed question answered at length: more than ``verbose_min_tokens``
                    tokens and more than ``verbose_ratio`` times the reference's tokens
wrong_modality      a modality question answered with another modality than the reference's
wrong_option_format a multiple-choice answer that does not start with an option letter
truncated           the generation stopped at its token limit (``finish_reason == "length"``)
copied_input        a text model's output repeats its input (``input_text``): it covers at
                    least ``copy_ratio`` of the input's tokens, in order
over_long           generated text (summaries) more than ``verbose_ratio`` times the
                    reference's tokens and more than ``verbose_min_tokens`` tokens
hallucinated_boxes  boxes predicted where the reference has none (VQA rows of sources that
                    annotate boxes: elsewhere no box is not evidence of absence)
missing_boxes       no box predicted where the reference has boxes (VQA rows)
malformed_boxes     a box outside [0, 1] or with ``x1 >= x2`` / ``y1 >= y2``
wrong_answer        a well-formed answer that is wrong (none of the answer kinds above)
==================  =========================================================================
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from medray.eval.mcq import names_letter
from medray.eval.structure import box_in_range
from medray.eval.vqa import canonical_yes_no, is_yes_no, normalize_answer, tokens

KINDS: dict[str, tuple[str, str]] = {
    # kind: (what it means, what to do about it)
    "unreadable_image": (
        "the image could not be read; the row counts as wrong",
        "re-run preprocessing on the source files (its quarantine lists bad records) "
        "or drop the source rows upstream",
    ),
    "unusable_input": (
        "the row lacks what the model's contract needs (see its error); it counts as wrong",
        "fix the rows upstream (preprocessing) or select the rows the task can use",
    ),
    "inference_error": (
        "inference failed for the row (see its error)",
        "read the error column and re-run batch inference for these rows",
    ),
    "invalid_json": (
        "the output is not the structured JSON answer",
        "more SFT examples of the JSON format, constrained decoding, or a larger format "
        "reward weight in GRPO; check max_new_tokens for truncated outputs",
    ),
    "empty_answer": (
        "no answer",
        "check the answer field of the SFT targets and max_new_tokens (truncation)",
    ),
    "refusal": (
        "the model declined to answer",
        "check the prompt and the domain guard; add answerable examples to SFT",
    ),
    "not_yes_no": (
        "a yes/no question answered with neither yes nor no",
        "say 'answer yes or no' in the prompt for closed questions, or constrain decoding",
    ),
    "verbose_answer": (
        "a closed question answered with a long text",
        "a length penalty at generation and concise answer targets in SFT (prior art: "
        "98.5% of a QA model's responses were overly verbose)",
    ),
    "wrong_modality": (
        "a modality question answered with another modality",
        "add modality questions to the training data and check the sources' modality labels",
    ),
    "wrong_option_format": (
        "a multiple-choice completion that names no option letter",
        "more SFT steps on the answer format (' <letter>. <option>'); check the prompt's "
        "option block",
    ),
    "truncated": (
        "the generation hit max_new_tokens before it ended",
        "raise generation.max_new_tokens (the contract's length) or train shorter targets",
    ),
    "copied_input": (
        "the output repeats the model's input instead of answering or summarising it",
        "more SFT steps or a lower learning rate (an undertrained LM continues its prompt); "
        "compare with copy_input_rougeL, the baseline a summary must beat",
    ),
    "over_long": (
        "generated text several times longer than the reference",
        "shorter generation.max_new_tokens, or SFT targets that end with the end token",
    ),
    "hallucinated_boxes": (
        "boxes where the reference has none",
        "the GRPO faithfulness reward; SFT examples with empty boxes where nothing is localised",
    ),
    "missing_boxes": (
        "no box where the reference has boxes",
        "SFT targets with boxes for localisable findings; a box reward",
    ),
    "malformed_boxes": (
        "a box outside [0, 1] or inverted",
        "boxes must be normalised x1 < x2, y1 < y2: check the prompt and the parser's "
        "pixel-box repair (it needs the image size)",
    ),
    "wrong_answer": (
        "a well-formed but wrong answer",
        "more or cleaner training data for the weakest question types (see the breakdowns)",
    ),
}
ANSWER_KINDS = frozenset(
    {
        "unreadable_image",
        "unusable_input",
        "inference_error",
        "empty_answer",
        "refusal",
        "not_yes_no",
        "wrong_modality",
    }
)

MODALITY_NAMES: dict[str, tuple[str, ...]] = {
    "x-ray": ("x ray", "xray", "radiograph", "radiography", "cxr", "plain film"),
    "ct": ("ct", "cta", "computed tomography", "cat scan"),
    "mri": ("mri", "mr", "magnetic resonance", "t1", "t2", "flair", "dwi"),
    "ultrasound": ("ultrasound", "ultrasonography", "sonography", "sonogram"),
    "pet": ("pet",),
    "angiography": ("angiography", "angiogram"),
}
_MODALITY_QUESTION = re.compile(
    r"\b(modality|what (kind|type) of (image|imaging|scan)|which imaging|"
    r"how (was|is) (this|the) (image|scan) (taken|obtained|acquired))\b",
    re.IGNORECASE,
)
_REFUSAL = re.compile(
    r"\b(i(?: cannot| can ?not| can't| am unable|'m unable| am not able|'m not able)"
    r"|unable to (?:determine|answer|assess|provide|tell)"
    r"|(?:cannot|can't) be (?:determined|answered)|not possible to (?:determine|tell)"
    r"|as an ai|i(?: am|'m) sorry|i don't know"
    r"|consult (?:a|your) (?:doctor|physician|radiologist|healthcare|medical))",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ErrorSettings:
    """Thresholds of the error analysis."""

    verbose_ratio: float = 3.0  # verbose: over this many times the reference's tokens ...
    verbose_min_tokens: int = 4  # ... and over this many tokens
    max_examples: int = 5  # sample ids listed per kind
    copy_ratio: float = 0.8  # copied_input: share of the input's tokens the output repeats


def modalities_named(text: str | None) -> set[str]:
    """Canonical modalities a text names (``"T2 weighted MR"`` -> ``{"mri"}``)."""
    norm = f" {normalize_answer(text)} "
    return {m for m, names in MODALITY_NAMES.items() if any(f" {n} " in norm for n in names)}


def is_modality_question(row: Mapping[str, Any]) -> bool:
    """Content type ``modality``, or a question that asks for the imaging modality."""
    if (row.get("content_type") or "").lower() == "modality":
        return True
    return bool(_MODALITY_QUESTION.search(row.get("question") or ""))


def is_refusal(text: str | None) -> bool:
    """The text declines to answer."""
    return bool(text) and bool(_REFUSAL.search(text.replace("\u2019", "'")))


def _answer_kinds(row: Mapping[str, Any], settings: ErrorSettings) -> list[str]:
    """Failure kinds of a question's answer (VQA and MCQ rows)."""
    pred, ref = row.get("pred_answer"), row.get("answer")
    if row.get("task") == "mcq":
        pred = row.get("mcq_pred") or pred
    if not re.search(r"\w", pred or ""):
        return ["refusal" if is_refusal(row.get("raw_text")) else "empty_answer"]
    if is_refusal(pred):
        return ["refusal"]
    kinds = []
    if row.get("answer_type") == "closed":
        if is_yes_no(ref) and canonical_yes_no(pred) is None:
            kinds.append("not_yes_no")
        n_pred, n_ref = len(tokens(pred)), max(1, len(tokens(ref)))
        if n_pred > settings.verbose_min_tokens and n_pred > settings.verbose_ratio * n_ref:
            kinds.append("verbose_answer")
    if is_modality_question(row):
        want, got = modalities_named(ref), modalities_named(pred)
        if want and got and not (want & got):
            kinds.append("wrong_modality")
    return kinds


def _over_long(text: str, reference: str, settings: ErrorSettings) -> bool:
    n, n_ref = len(tokens(text)), max(1, len(tokens(reference)))
    return n > settings.verbose_min_tokens and n > settings.verbose_ratio * n_ref


def copied_share(output: str | None, source: str | None) -> float:
    """Share of ``source``'s tokens that ``output`` repeats in order (0 without tokens)."""
    src, out = tokens(source), tokens(output)
    if not src or not out:
        return 0.0
    blocks = difflib.SequenceMatcher(None, out, src, autojunk=False).get_matching_blocks()
    return sum(b.size for b in blocks) / len(src)


def _text_kinds(row: Mapping[str, Any], settings: ErrorSettings) -> list[str]:
    """Failure kinds of a text model's completion: truncated, copied its input."""
    kinds = []
    if row.get("finish_reason") == "length":
        kinds.append("truncated")
    output = row.get("raw_text") if row.get("task") == "mcq" else row.get("generated_text")
    source = row.get("input_text")
    if source and len(tokens(source)) >= 3 and copied_share(output, source) >= settings.copy_ratio:
        kinds.append("copied_input")
    return kinds


def failure_kinds(
    row: Mapping[str, Any], settings: ErrorSettings, source_has_boxes: bool
) -> list[str]:
    """Every failure kind a scored row shows (see the module docstring).

    Args:
        row: a prediction row plus ``correct`` (bool or None for rows without an answer
            metric).
        settings: thresholds.
        source_has_boxes: the row's source annotates boxes on some rows.
    """
    if row.get("error"):
        if row["error"].startswith("image"):
            return ["unreadable_image"]
        return ["unusable_input" if row["error"].startswith("input") else "inference_error"]
    kinds: list[str] = []
    task = row.get("task")
    if task == "vqa" and not row.get("parse_ok"):
        kinds.append("invalid_json")
    pred = row.get("pred_answer") or ""
    if (
        task == "mcq"
        and not row.get("mcq_pred")
        and re.search(r"\w", pred)
        and not names_letter(pred)
    ):
        kinds.append("wrong_option_format")  # an answer, but not by its letter
    if task in ("vqa", "mcq"):
        kinds += [k for k in _answer_kinds(row, settings) if k not in kinds]
    elif row.get("reference_text"):  # a generation row (report, summary)
        text = row.get("generated_text") or ""
        if not text.strip():
            kinds.append("refusal" if is_refusal(row.get("raw_text")) else "empty_answer")
        elif is_refusal(text):
            kinds.append("refusal")
        elif _over_long(text, row["reference_text"], settings):
            kinds.append("over_long")
    kinds += _text_kinds(row, settings)
    pred_boxes, ref_boxes = row.get("pred_boxes") or [], row.get("boxes") or []
    if task == "vqa" and pred_boxes and not ref_boxes and source_has_boxes:
        kinds.append("hallucinated_boxes")
    if task == "vqa" and ref_boxes and not pred_boxes:
        kinds.append("missing_boxes")
    if any(not box_in_range(b) for b in pred_boxes):
        kinds.append("malformed_boxes")
    if row.get("correct") is False and not ANSWER_KINDS & set(kinds):
        kinds.append("wrong_answer")
    return kinds


def annotate_failures(
    rows: Sequence[dict[str, Any]], settings: ErrorSettings = ErrorSettings()
) -> None:
    """Set ``row["failures"]`` (list of kinds) on every scored row, in place."""
    boxed_sources = {r.get("source") for r in rows if r.get("boxes")}
    for r in rows:
        r["failures"] = failure_kinds(r, settings, r.get("source") in boxed_sources)


def error_analysis(
    rows: Iterable[Mapping[str, Any]], settings: ErrorSettings = ErrorSettings()
) -> dict[str, Any]:
    """Counts, rates (over all rows), meaning, advice and example ids per failure kind.

    Args:
        rows: rows annotated by :func:`annotate_failures`.
        settings: ``max_examples`` sample ids are listed per kind.

    Returns:
        ``n``, ``rows_with_failure`` and ``kinds``: only kinds that occur, most frequent
        first, each ``count``, ``rate``, ``meaning``, ``suggestion``, ``examples``.
    """
    rows = list(rows)
    n = len(rows)
    counts: dict[str, list[str]] = {}
    for r in rows:
        for k in r["failures"]:
            counts.setdefault(k, []).append(r["sample_id"])
    order = sorted(counts, key=lambda k: (-len(counts[k]), list(KINDS).index(k)))
    return {
        "n": n,
        "rows_with_failure": sum(bool(r["failures"]) for r in rows),
        "kinds": {
            k: {
                "count": len(counts[k]),
                "rate": len(counts[k]) / n,
                "meaning": KINDS[k][0],
                "suggestion": KINDS[k][1],
                "examples": counts[k][: settings.max_examples],
            }
            for k in order
        },
    }
