"""The per-record transform: decode, resize, hash, boxes; every bad input gets its reason."""

from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pyarrow as pa
import pytest
from PIL import Image

from medray.data import output
from medray.data.config import ImageSettings
from medray.data.images import map_box, prepare_image
from medray.data.schema import row_errors
from medray.data.sink import write_block
from medray.data.transform import dedup_key, process_batch, process_record, rows_to_table

pytestmark = pytest.mark.unit

SETTINGS = ImageSettings(size=64)


def jpeg(w: int = 200, h: int = 100, mode: str = "L", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    shape = (h, w) if mode == "L" else (h, w, 3)
    arr = (rng.random(shape) * 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def vqa_record(root, image="img.jpg", **over):
    rec = {
        "source": "t",
        "root": str(root),
        "original_id": "1",
        "sample_id": "t:1",
        "task": "vqa",
        "split": "train",
        "image": image,
        "question": "Is there a nodule?",
        "answer": "yes",
        "answer_type": "closed",
    }
    rec.update(over)
    return rec


def test_good_image_becomes_a_valid_row(tmp_path):
    (tmp_path / "img.jpg").write_bytes(jpeg(200, 100))
    row = process_record(vqa_record(tmp_path), SETTINGS)
    assert row.get("_reason") is None and row_errors(row) == []
    assert (row["image_width"], row["image_height"]) == (64, 64)
    assert (row["source_width"], row["source_height"]) == (200, 100)
    assert row["image_sha256"] == hashlib.sha256(row["image"]).hexdigest()
    assert Image.open(io.BytesIO(row["image"])).mode == "L"
    # Deterministic: same input, same bytes.
    assert process_record(vqa_record(tmp_path), SETTINGS)["image"] == row["image"]


def test_pad_resize_maps_boxes_into_the_stored_image(tmp_path):
    # A 200x100 image padded to 64x64: content occupies rows 16..48.
    (tmp_path / "img.jpg").write_bytes(jpeg(200, 100))
    rec = vqa_record(
        tmp_path, boxes=[{"label": "n", "x1": 0, "y1": 0, "x2": 100, "y2": 100}], box_units="px"
    )
    box = process_record(rec, SETTINGS)["boxes"][0]
    assert box["x1"] == pytest.approx(0.0) and box["x2"] == pytest.approx(0.5)
    assert box["y1"] == pytest.approx(16 / 64) and box["y2"] == pytest.approx(48 / 64)
    img = prepare_image(jpeg(200, 100), ImageSettings(size=64, resize="stretch"))
    b = map_box({"label": "n", "x1": 0.5, "y1": 0.5, "x2": 1.0, "y2": 1.0}, img, "norm")
    assert (b["x1"], b["y1"], b["x2"], b["y2"]) == (0.5, 0.5, 1.0, 1.0)


def test_sixteen_bit_and_rgba_png_are_converted(tmp_path):
    arr16 = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(arr16).save(buf, "PNG")  # a 16-bit grayscale PNG
    img = prepare_image(buf.getvalue(), SETTINGS)
    stored = np.asarray(Image.open(io.BytesIO(img.data)))
    assert stored.min() < 10 and stored.max() > 245  # full 8-bit range after rescaling
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 128))
    buf = io.BytesIO()
    rgba.save(buf, "PNG")
    assert Image.open(io.BytesIO(prepare_image(buf.getvalue(), SETTINGS).data)).mode == "RGB"


@pytest.mark.parametrize(
    ("make", "reason"),
    [
        (lambda d: d[: len(d) // 2], "image truncated"),
        (lambda d: d[:4] + b"\x00" * 600, "image unreadable"),
        (lambda d: b"", "image file is empty"),
    ],
    ids=["truncated", "corrupt-header", "empty"],
)
def test_broken_images_are_quarantined_with_reason(tmp_path, make, reason):
    (tmp_path / "img.jpg").write_bytes(make(jpeg()))
    row = process_record(vqa_record(tmp_path), SETTINGS)
    assert row["_reason"].startswith(reason) and row["_reason"].endswith(": img.jpg")
    assert row["_stage"] == "image" and row["_path"] == "img.jpg"
    assert json.loads(row["_raw"])["question"] == "Is there a nodule?"


def test_missing_oversized_and_too_many_pixels(tmp_path):
    row = process_record(vqa_record(tmp_path, image="imgs/xmlab102/source.jpg"), SETTINGS)
    assert row["_reason"] == "image file missing: imgs/xmlab102/source.jpg"
    (tmp_path / "img.jpg").write_bytes(jpeg(200, 100))
    row = process_record(vqa_record(tmp_path), ImageSettings(size=64, max_pixels=10_000))
    assert row["_reason"] == "image 200x100 exceeds max_pixels 10000: img.jpg"
    row = process_record(vqa_record(tmp_path), ImageSettings(size=64, max_file_bytes=100))
    assert (
        row["_reason"].startswith("image file ") and "exceeds max_file_bytes 100" in row["_reason"]
    )


def test_reader_rejects_and_schema_violations_are_quarantined(tmp_path):
    row = process_record(
        {
            "source": "t",
            "root": str(tmp_path),
            "original_id": "9",
            "reject": "missing field: answer",
        },
        SETTINGS,
    )
    assert (row["_stage"], row["_reason"]) == ("read", "missing field: answer")
    (tmp_path / "img.jpg").write_bytes(jpeg())
    bad_box = vqa_record(
        tmp_path,
        boxes=[{"label": "n", "x1": 0.6, "y1": 0.1, "x2": 0.2, "y2": 0.3}],
        box_units="norm",
    )
    row = process_record(bad_box, SETTINGS)
    assert row["_stage"] == "validate" and row["_reason"].startswith("schema violation: boxes[0]")


def test_report_rows_read_sections_or_quarantine(tmp_path):
    (tmp_path / "img.jpg").write_bytes(jpeg())
    rec = vqa_record(
        tmp_path, task="report", question=None, answer=None, answer_type=None, report="s1.txt"
    )
    assert process_record(rec, SETTINGS)["_reason"] == "report file missing: s1.txt"
    (tmp_path / "s1.txt").write_text(" FINDINGS: Small left effusion.\n IMPRESSION: Effusion.\n")
    row = process_record(rec, SETTINGS)
    assert (row["findings"], row["impression"]) == ("Small left effusion.", "Effusion.")
    (tmp_path / "s1.txt").write_text("FINAL REPORT\n nothing here\n")
    assert process_record(rec, SETTINGS)["_reason"].startswith(
        "report has neither FINDINGS nor IMPRESSION"
    )


def test_dedup_key_ignores_case_whitespace_and_answer():
    a = {
        "task": "vqa",
        "image_sha256": "a" * 64,
        "question": "Is there  a nodule?",
        "answer": "yes",
    }
    b = {**a, "question": "is there a nodule?", "answer": "no"}
    assert dedup_key(a) == dedup_key(b)
    assert dedup_key(a) != dedup_key({**a, "image_sha256": "b" * 64})
    assert dedup_key(a) != dedup_key({**a, "question": "Is there an effusion?"})


def test_batch_and_sink_write_split_shards_and_quarantine(tmp_path):
    (tmp_path / "img.jpg").write_bytes(jpeg())
    recs = [
        vqa_record(tmp_path, sample_id="t:1"),
        vqa_record(tmp_path, sample_id="t:2", original_id="2", split="test"),
        vqa_record(tmp_path, sample_id="t:3", original_id="3", image="gone.jpg"),
    ]
    table = process_batch(pa.table({"rec": [json.dumps(r) for r in recs]}), SETTINGS)
    assert table.num_rows == 3 and table.column("_node").to_pylist() == ["local"] * 3
    staged = output.begin(str(tmp_path / "out"), overwrite=False)
    res = write_block(table, staged.staging, "00000-x")
    assert {s: n for s, items in res.files.items() for _, n in items} == {"train": 1, "test": 1}
    assert res.quarantine_files == [("quarantine/part-00000-x.parquet", 1)]
    assert dict(res.quarantined) == {("t", "image file missing"): 1}
    assert [e[2] for e in res.index] == ["t:1", "t:2"]
    assert rows_to_table([], "n").num_rows == 0
    # A write task still in flight when the run aborts finds no folder to write into: it
    # fails instead of re-creating the deleted staging folder (the CI failure of stop 29,
    # `.fresh.tmp-*` left behind by `test_failed_run_leaves_no_partial_output`).
    output.abort(staged)
    with pytest.raises(FileNotFoundError):
        write_block(table, staged.staging, "00001-late")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["img.jpg"]


def test_abort_of_a_uri_run_leaves_no_run_folder(tmp_path):
    staged = output.begin(f"file://{tmp_path}/bucket/out", overwrite=False)
    run_dir = tmp_path / "bucket/out" / f"run-{staged.run_id}"
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(output.SHARD_DIRS)
    output.abort(staged)
    assert list((tmp_path / "bucket/out").iterdir()) == []


def test_wrong_types_and_unexpected_errors_are_quarantined_not_fatal(tmp_path):
    from medray.data.transform import safe_process

    (tmp_path / "img.jpg").write_bytes(jpeg())
    row = process_record(vqa_record(tmp_path, labels="Effusion"), SETTINGS)
    assert row["_reason"] == "schema violation: labels must be a list of strings"
    row = process_record(vqa_record(tmp_path, patient_id=17), SETTINGS)
    assert row["_reason"] == "schema violation: patient_id must be string, got int"
    # An error nobody foresaw on one record becomes a quarantine entry with the error.
    odd = json.dumps(vqa_record(tmp_path, image=["not", "a", "path"]))
    row = safe_process(odd, SETTINGS)
    assert row["_stage"] == "internal" and row["_reason"].startswith("unexpected error: TypeError")
    # The testing aid still fails the run on purpose.
    with pytest.raises(RuntimeError, match="injected failure at record 3"):
        safe_process(json.dumps(vqa_record(tmp_path, i=3)), SETTINGS, fail_at=3)
