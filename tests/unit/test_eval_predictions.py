"""The prediction-file contract: round trip, unreadable rows kept, and every refusal."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from eval_fixtures import DATASET, UNREADABLE, VQA_ROWS, row, write_run

from medray.eval.predictions import (
    FORMAT,
    MANIFEST,
    REQUIRED,
    PredictionFileError,
    PredictionMismatchError,
    build_table,
    check_expected,
    fingerprint,
    read_predictions,
    table_fingerprint,
    unreadable_row,
    write_manifest,
)

pytestmark = pytest.mark.unit


def test_round_trip_keeps_every_row_and_value(tmp_path):
    folder = write_run(tmp_path / "p", VQA_ROWS, label="sft", adapter="/adapters/sft")
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["format"] == FORMAT and manifest["model_label"] == "sft"
    assert manifest["adapter"] == "/adapters/sft" and manifest["split"] == "test"
    assert manifest["created"] and manifest["dataset_fingerprint"].startswith("sha256:")

    preds = read_predictions(folder)
    rows = {r["sample_id"]: r for r in preds.rows()}
    assert len(rows) == len(VQA_ROWS) == preds.table.num_rows
    assert rows["q05"]["pred_boxes"] == [[0.5, 0.5, 1.0, 1.0], [0.0, 0.0, 0.25, 0.5]]
    assert rows["q05"]["boxes"][1] == {
        "label": "lesion",
        "x1": 0.5,
        "y1": 0.5,
        "x2": 1.0,
        "y2": 1.0,
    }
    assert rows["q10"]["choices"] == ["Left", "Right"]
    assert rows["q01"]["cf_roi_answer"] == "no"  # optional columns survive
    assert preds.label == "sft"


def test_unreadable_rows_stay_in_the_file_with_their_error(tmp_path):
    ref = {"sample_id": "bad", "source": "vqa-rad", "split": "test", "task": "vqa",
           "question": "is there a fracture?", "answer": "no", "answer_type": "closed"}  # fmt: skip
    rows = [row("ok"), unreadable_row(ref, "image: truncated or corrupt image")]
    preds = read_predictions(write_run(tmp_path / "p", rows))
    got = {r["sample_id"]: r for r in preds.rows()}
    assert set(got) == {"ok", "bad"}
    assert got["bad"]["error"] == "image: truncated or corrupt image"
    assert got["bad"]["pred_answer"] is None and got["bad"]["parse_ok"] is False
    assert got["bad"]["question"] == "is there a fracture?"
    with pytest.raises(ValueError, match="non-empty error"):
        unreadable_row(ref, "")


def test_fingerprint_ignores_order_and_sees_edits():
    ids, qs, ans = ["a", "b"], ["q1", "q2"], ["yes", "no"]
    fp = fingerprint(ids, qs, ans)
    assert fp == fingerprint(ids[::-1], qs[::-1], ans[::-1])
    assert fp != fingerprint(ids, qs, ["yes", "yes"])
    assert fp != fingerprint(["a"], ["q1"], ["yes"])
    assert table_fingerprint(build_table([row("a", question="q1", answer="yes"),
                                          row("b", question="q2", answer="no")])) == fp  # fmt: skip


def test_multi_file_folder_from_another_writer(tmp_path):
    """Ray Data writes many files, float32 and large types; the reader conforms them."""
    folder = tmp_path / "ray"
    folder.mkdir()
    table = build_table(VQA_ROWS)
    half = table.num_rows // 2
    cast = table.set_column(
        table.schema.get_field_index("confidence"),
        "confidence",
        table.column("confidence").cast(pa.float32()),
    ).set_column(
        table.schema.get_field_index("raw_text"),
        "raw_text",
        table.column("raw_text").cast(pa.large_string()),
    )
    pq.write_table(cast.slice(0, half), folder / "a_000.parquet")
    (folder / "sub").mkdir()
    pq.write_table(cast.slice(half), folder / "sub" / "b_000.parquet")
    write_manifest(folder, model="m", model_label="base", dataset=DATASET, split="test",
                   dataset_fingerprint=table_fingerprint(table))  # fmt: skip
    preds = read_predictions(folder)
    assert preds.table.num_rows == len(VQA_ROWS)
    assert preds.table.schema.field("confidence").type == pa.float64()


def _corrupt(tmp_path, mutate, rows=None):
    folder = write_run(tmp_path / "p", rows or [row("a"), row("b")])
    part = folder / "part-00000.parquet"
    pq.write_table(mutate(pq.read_table(part)), part)
    return folder


def test_refuses_missing_columns(tmp_path):
    folder = _corrupt(tmp_path, lambda t: t.drop_columns(["confidence", "parse_ok"]))
    with pytest.raises(
        PredictionFileError, match=r"missing required columns \['parse_ok', 'confidence'\]"
    ):
        read_predictions(folder)


def test_refuses_unknown_columns_with_a_suggestion(tmp_path):
    folder = _corrupt(tmp_path, lambda t: t.append_column("confidance", t.column("confidence")))
    with pytest.raises(
        PredictionFileError, match="'confidance' \\(did you mean 'confidence'\\?\\)"
    ):
        read_predictions(folder)


def test_refuses_a_column_of_the_wrong_type(tmp_path):
    def mutate(t):
        i = t.schema.get_field_index("latency_ms")
        return t.set_column(i, "latency_ms", pa.array(["fast"] * t.num_rows))

    with pytest.raises(PredictionFileError, match="'latency_ms' has type string, expected double"):
        read_predictions(_corrupt(tmp_path, mutate))


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"confidence": 1.5}, "confidence 1.5 is not in \\[0, 1\\]"),
        ({"answer_type": "yesno"}, "answer_type 'yesno'"),
        ({"task": "chat"}, "task 'chat'"),
        ({"pred_boxes": [[0.1, 0.2, 0.3]]}, "not four finite numbers"),
        ({"error": "image: corrupt"}, "must have null predictions"),
        ({"parsed": "not json"}, "parsed is not a JSON object"),
        ({"latency_ms": -1.0}, "latency_ms -1.0"),
        ({"answer_type": "choice", "choices": ["a", "b"], "answer": "c"}, "answer one of them"),
    ],
)
def test_refuses_rows_that_break_a_value_rule(tmp_path, bad, message):
    with pytest.raises(PredictionFileError, match=message):
        write_run(tmp_path / "p", [row("a"), row("b", **bad)])


def test_refuses_duplicate_ids_and_nulls_in_required_columns(tmp_path):
    with pytest.raises(PredictionFileError, match="'a' appears more than once"):
        write_run(tmp_path / "p", [row("a"), row("a")])
    with pytest.raises(PredictionFileError, match="'error' has nulls"):
        write_run(tmp_path / "q", [row("a", error=None)])


def test_refuses_a_folder_without_manifest_or_of_another_format(tmp_path):
    with pytest.raises(PredictionFileError, match="no such predictions folder"):
        read_predictions(tmp_path / "nothing")
    folder = write_run(tmp_path / "p", [row("a")])
    (folder / MANIFEST).unlink()
    with pytest.raises(PredictionFileError, match="no manifest.json; not a complete"):
        read_predictions(folder)
    folder = write_run(tmp_path / "q", [row("a")])
    m = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**m, "format": "medray-predictions/2"}))
    with pytest.raises(PredictionFileError, match="another MedRay version"):
        read_predictions(folder)
    (folder / MANIFEST).write_text(json.dumps({**m, "split": ""}))
    with pytest.raises(PredictionFileError, match="'split' must be a non-empty string"):
        read_predictions(folder)


def test_refuses_rows_edited_after_inference(tmp_path):
    def edit(t):
        i = t.schema.get_field_index("answer")
        return t.set_column(i, "answer", pa.array(["no"] * t.num_rows))

    with pytest.raises(PredictionMismatchError, match="rows do not match the manifest"):
        read_predictions(_corrupt(tmp_path, edit))
    # A dropped row (e.g. an unreadable image filtered out) is refused the same way.
    with pytest.raises(PredictionMismatchError, match="rows do not match the manifest"):
        read_predictions(_corrupt(tmp_path / "x", lambda t: t.slice(1)))


def test_refuses_rows_of_another_split_than_the_manifest(tmp_path):
    folder = write_run(tmp_path / "p", [row("a"), row("b")])
    part = folder / "part-00000.parquet"
    t = pq.read_table(part)
    i = t.schema.get_field_index("split")
    pq.write_table(t.set_column(i, "split", pa.array(["test", "train"])), part)
    with pytest.raises(PredictionMismatchError, match=r"rows of split\(s\) \['test', 'train'\]"):
        read_predictions(folder)


def test_check_expected_refuses_other_split_dataset_model_and_rows(tmp_path):
    preds = read_predictions(write_run(tmp_path / "p", [row("a")], label="sft", adapter="/ad/sft"))
    check_expected(preds, dataset=DATASET, split="test", model="sft")
    check_expected(preds, dataset=DATASET + "/", model="/ad/sft")
    check_expected(preds, model="tiny-qwen2-vl", fingerprint=preds.manifest.dataset_fingerprint)
    with pytest.raises(
        PredictionMismatchError, match="split 'test', not the expected 'validation'"
    ):
        check_expected(preds, split="validation")
    with pytest.raises(
        PredictionMismatchError, match="dataset '/data/medray/synthetic', not the expected"
    ):
        check_expected(preds, dataset="/data/other")
    with pytest.raises(PredictionMismatchError, match="not the expected 'grpo'"):
        check_expected(preds, model="grpo")
    with pytest.raises(PredictionMismatchError, match="other input rows"):
        check_expected(preds, fingerprint="sha256:0000")


def test_build_table_names_unknown_keys():
    with pytest.raises(
        PredictionFileError, match="'pred_anwser' \\(did you mean 'pred_answer'\\?\\)"
    ):
        build_table([{**row("a"), "pred_anwser": "x"}])
    assert set(REQUIRED) <= set(build_table([row("a")]).schema.names)


def test_write_refuses_to_clobber(tmp_path):
    folder = write_run(tmp_path / "p", [row("a")])
    with pytest.raises(PredictionFileError, match="not empty"):
        write_run(folder, [row("b")])
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    from medray.eval.predictions import write_predictions

    with pytest.raises(PredictionFileError, match="not a predictions folder"):
        write_predictions(other, [row("a")], model="m", model_label="x", dataset=DATASET,
                          split="test", overwrite=True)  # fmt: skip
    assert (other / "keep.txt").read_text() == "mine"


def test_unreadable_constant_matches_the_helper():
    """The fixture's unreadable row is what unreadable_row produces."""
    made = unreadable_row(row("x"), UNREADABLE["error"])
    assert {k: made[k] for k in UNREADABLE} == {**UNREADABLE, "pred_reasoning": []}


def test_write_manifest_verifies_the_files_it_describes(tmp_path):
    """A writer that drops a row (say an unreadable image) gets an error, not a manifest."""
    rows = [row("a"), row("b", **UNREADABLE)]
    input_fp = table_fingerprint(build_table(rows))
    folder = tmp_path / "p"
    folder.mkdir()
    pq.write_table(build_table(rows[:1]), folder / "part-0.parquet")
    with pytest.raises(PredictionMismatchError, match="rows do not match the manifest"):
        write_manifest(folder, model="m", model_label="base", dataset=DATASET, split="test",
                       dataset_fingerprint=input_fp)  # fmt: skip
    assert not (folder / MANIFEST).exists()
    from medray.eval.predictions import write_predictions

    with pytest.raises(PredictionMismatchError, match="1 rows are not the input rows"):
        write_predictions(tmp_path / "q", rows[:1], model="m", model_label="base",
                          dataset=DATASET, split="test", dataset_fingerprint=input_fp)  # fmt: skip
    assert not (tmp_path / "q").exists()


def test_docs_document_every_column():
    """docs/evaluation.md's contract table names every column of the contract (kept in step)."""
    from pathlib import Path

    from medray.eval.predictions import ALL_COLUMNS

    readme = (Path(__file__).resolve().parents[2] / "docs" / "evaluation.md").read_text()
    section = readme[readme.index("### The prediction-file contract") : readme.index("### Metrics")]
    missing = [name for name, *_ in ALL_COLUMNS if f"`{name}`" not in section]
    assert not missing, f"docs/evaluation.md's prediction-file contract lacks {missing}"
