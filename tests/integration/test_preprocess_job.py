"""The preprocess job on the shared 3-node cluster: real + synthetic sources, bad input,
atomic output, patient-level splits, and the job through `ray job submit`."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from io import BytesIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from jobs.preprocess import PreprocessConfig, run
from medray.cli.main import cli
from medray.config import from_dict
from medray.data.output import (
    OutputError,
    load_manifest,
    read_quarantine,
    read_ray_dataset,
    read_table,
)
from medray.data.synth import generate

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def config(sources: list[dict], output: Path | str, **kw) -> PreprocessConfig:
    return from_dict(
        PreprocessConfig, {"sources": sources, "output": str(output), "image": {"size": 64}, **kw}
    )


def accounting_holds(summary: dict) -> bool:
    c = summary["counts"]
    return c["in"] == c["written"] + c["quarantined"] + c["duplicates"]


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate("mimic-cxr", root / "mimic", n=40, seed=0, image_size=96)
    generate("vqa-rad", root / "vqa-rad", n=16, seed=0, image_size=96)
    generate("slake", root / "slake", n=10, seed=0, image_size=96)
    generate("medmcqa", root / "medmcqa", n=40, seed=0)
    return root


def test_real_and_synthetic_sources_end_to_end(ray_cluster, synth, shared_data, tmp_path):
    out = tmp_path / "out"
    cfg = config(
        [
            {"kind": "mimic-cxr", "path": str(synth / "mimic")},
            {"kind": "vqa-rad", "path": str(synth / "vqa-rad")},
            {"kind": "slake", "path": str(synth / "slake")},
            {"kind": "medmcqa", "path": str(synth / "medmcqa")},
            {"kind": "vqa-rad", "name": "vqa-rad-real", "path": str(shared_data / "vqa_rad")},
            {"kind": "slake", "name": "slake-real", "path": str(shared_data / "slake")},
            {"kind": "pubmedqa", "path": str(shared_data / "pubmedqa")},
            {
                "kind": "jsonl",
                "name": "nih",
                "path": str(REPO / "datasets/samples/nih_cxr14_vqa.jsonl"),
                "image_root": str(shared_data / "nih_chestxray14/images"),
            },
        ],
        out,
        num_blocks=12,
    )
    s = run(cfg)
    assert accounting_holds(s), s["counts"]
    src = s["per_source"]
    for name in ("mimic-cxr", "vqa-rad", "slake", "medmcqa", "pubmedqa", "nih"):
        assert (
            src[name]["quarantined"] == 0
            and src[name]["written"] + src[name]["duplicates"] == src[name]["in"]
        )
    assert src["mimic-cxr"]["written"] == 40
    # Real SLAKE ships without images: every row is quarantined, with the path that is missing.
    assert src["slake-real"]["quarantined"] == src["slake-real"]["in"] == 332
    q = read_quarantine(str(out)).to_pylist()
    assert all(
        r["reason"] == f"image file missing: {r['path']}" for r in q if r["source"] == "slake-real"
    )
    # Real VQA-RAD: 72 exact repeats of (image, question) in the MEVF split are dropped, from
    # train, so the official test set stays whole.
    assert src["vqa-rad-real"]["duplicates"] == 72
    table = read_table(str(out))  # schema-validated read
    rows = table.drop_columns(["image"]).to_pylist()
    real = [r for r in rows if r["source"] == "vqa-rad-real"]
    assert Counter(r["split"] for r in real) == {"train": 412 - 72, "test": 88}
    assert table.num_rows == s["counts"]["written"] == sum(s["per_split"].values())
    # Images are stored at the target size and decode.
    img = Image.open(BytesIO(table.column("image")[0].as_py()))
    assert img.size == (64, 64)
    # MIMIC: one row per image, with report sections, labels and boxes; patients in one split.
    mimic = [r for r in rows if r["source"] == "mimic-cxr"]
    assert all(
        r["task"] == "report" and (r["findings"] or r["impression"]) and r["labels"] for r in mimic
    )
    assert any(r["boxes"] for r in mimic)
    splits_of: dict[str, set] = {}
    for r in mimic:
        splits_of.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(v) == 1 for v in splits_of.values())
    assert {r["language"] for r in rows if r["source"] == "slake"} == {"en", "zh"}
    # Work ran on several nodes of the 3-node cluster.
    assert s["cluster_nodes"] == 3 and len(s["nodes_used"]) >= 2, s["rows_per_node"]
    # Ray Data reads it back with validation of every batch.
    assert read_ray_dataset(str(out), split="test").count() == s["per_split"]["test"]
    res = CliRunner().invoke(cli, ["data", "inspect", str(out)])
    assert res.exit_code == 0, res.output
    assert (
        f"{table.num_rows} rows (schema valid)" in res.output
        and "image file missing: 332" in res.output
    )


def break_vqa_rad(root: Path) -> dict[str, list[str]]:
    """Damage a generated VQA-RAD (MEVF) folder; return the expected fate of sample ids."""
    train = json.loads((root / "trainset.json").read_text())
    test = json.loads((root / "testset.json").read_text())
    by_image: dict[str, list[dict]] = {}
    for q in train + test:
        by_image.setdefault(q["image_name"], []).append(q)
    names = sorted(by_image)
    corrupt, truncated, missing, big, dup_src, field_img = names[:6]
    images = root / "images"
    data = (images / corrupt).read_bytes()
    (images / corrupt).write_bytes(data[:2] + b"\x00" * 64 + data[66:])  # header destroyed
    data = (images / truncated).read_bytes()
    (images / truncated).write_bytes(data[: len(data) // 2])
    (images / missing).unlink()
    Image.new("L", (300, 300), 128).save(images / big, "JPEG")  # over max_pixels (200x200)
    shutil.copy(images / dup_src, images / "synpic999999.jpg")  # same bytes, another name
    copies = []
    for q in by_image[dup_src]:
        c = {**q, "qid": 900000 + q["qid"], "image_name": "synpic999999.jpg"}
        (train if q in train else test).append(c)
        copies.append(c)
    victim = by_image[field_img][0]
    del victim["answer"]
    train.append("garbage: not a record")
    (root / "trainset.json").write_text(json.dumps(train))
    (root / "testset.json").write_text(json.dumps(test))
    sid = lambda q: f"vqa-rad:{q['qid']}"  # noqa: E731
    return {
        "image unreadable": [sid(q) for q in by_image[corrupt]],
        "image truncated": [sid(q) for q in by_image[truncated]],
        "image file missing": [sid(q) for q in by_image[missing]],
        "exceeds max_pixels": [sid(q) for q in by_image[big]],
        "missing field: answer": [str(victim["qid"])],
        "duplicates": [sid(c) for c in copies],
        "originals": [sid(q) for q in by_image[dup_src]],
    }


def test_bad_inputs_end_where_they_belong_and_nothing_is_lost(ray_cluster, tmp_path):
    root = tmp_path / "vqa-rad"
    generate("vqa-rad", root, n=14, seed=3, image_size=96)
    expect = break_vqa_rad(root)
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text(
        '{"id": "ok", "question": "Q?", "answer": "a", "choices": ["a", "b"]}\n{broken json\n'
    )
    out = tmp_path / "out"
    cfg = config(
        [
            {"kind": "vqa-rad", "path": str(root)},
            {"kind": "jsonl", "name": "extra", "path": str(jsonl)},
        ],
        out,
        image={"size": 64, "max_pixels": 200 * 200},
    )
    s = run(cfg)
    lines_in = [json.loads((root / f).read_text()) for f in ("trainset.json", "testset.json")]
    c = s["counts"]
    assert c["in"] == sum(map(len, lines_in)) + 2  # every JSON element and JSONL line is a record
    assert accounting_holds(s), c

    quarantine = read_quarantine(str(out)).to_pylist()
    reasons = {r["sample_id"] or r["original_id"]: r["reason"] for r in quarantine}
    for kind in ("image unreadable", "image truncated", "image file missing", "exceeds max_pixels"):
        assert expect[kind], kind
        for sid in expect[kind]:
            assert kind in reasons[sid], (sid, reasons.get(sid))
    assert reasons[expect["missing field: answer"][0]] == "missing field: answer"
    assert any(
        r.startswith("unreadable row: element") for r in reasons.values()
    )  # the garbage element
    assert any("unreadable row: line 2" in r for r in reasons.values())  # the broken JSONL line
    # The copied image is a duplicate: its questions are dropped and listed, the originals kept.
    dups = [json.loads(line) for line in (out / "duplicates.jsonl").read_text().splitlines()]
    assert sorted(d["sample_id"] for d in dups) == sorted(expect["duplicates"])
    written = set(read_table(str(out), columns=["sample_id"]).column("sample_id").to_pylist())
    assert set(expect["originals"]) <= written
    # Every record is accounted for exactly once: written, quarantined or dropped as a duplicate.
    assert (
        c["quarantined"] == len(quarantine)
        and c["duplicates"] == len(dups)
        and c["written"] == len(written)
    )
    bad = {
        sid
        for k in ("image unreadable", "image truncated", "image file missing", "exceeds max_pixels")
        for sid in expect[k]
    }
    assert not bad & written and "extra:ok" in written
    # The quarantine JSONL mirrors the Parquet one.
    lines = (out / "quarantine.jsonl").read_text().splitlines()
    assert len(lines) == len(quarantine) and all("reason" in json.loads(x) for x in lines)


def test_failed_run_leaves_no_partial_output(ray_cluster, synth, tmp_path):
    src = [{"kind": "vqa-rad", "path": str(synth / "vqa-rad")}]
    out = tmp_path / "out"
    first = run(config(src, out))
    before = (out / "_SUCCESS").read_text()
    with pytest.raises(Exception, match="injected failure at record 5"):
        run(config(src, out, fail_at_record=5))
    assert (out / "_SUCCESS").read_text() == before  # the earlier output is untouched
    assert read_table(str(out)).num_rows == first["counts"]["written"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no staging folder left behind
    fresh = tmp_path / "fresh"
    with pytest.raises(Exception, match="injected failure"):
        run(config(src, fresh, fail_at_record=0))
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    # Readers refuse a folder without the manifest, and the job never deletes foreign folders.
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="no _SUCCESS manifest"):
        read_table(str(tmp_path / "foreign"))
    with pytest.raises(OutputError, match="not a MedRay preprocessed output"):
        run(config(src, tmp_path / "foreign"))
    assert (tmp_path / "foreign" / "keep.txt").read_text() == "mine"


def test_uri_output_commits_with_the_manifest(ray_cluster, synth, tmp_path):
    """Object-store semantics (no rename) through a file:// URI: data under run-<id>/,
    `_SUCCESS` written last and pointing there; a failed run changes nothing."""
    src = [{"kind": "medmcqa", "path": str(synth / "medmcqa")}]
    uri = f"file://{tmp_path}/bucket/out"
    s = run(config(src, uri))
    manifest = load_manifest(uri)
    assert manifest["data_dir"].startswith("run-")
    assert read_table(uri).num_rows == s["counts"]["written"] > 0
    with pytest.raises(Exception, match="injected failure"):
        run(config(src, uri, fail_at_record=2))
    assert load_manifest(uri) == manifest
    assert [p.name for p in (tmp_path / "bucket/out").iterdir() if p.name.startswith("run-")] == [
        manifest["data_dir"]
    ]


def test_no_patient_is_split_across_splits(ray_cluster, tmp_path):
    root = tmp_path / "mimic"
    generate("mimic-cxr", root, n=80, seed=9, image_size=64)
    # Corrupt the official split CSV: put every second image in another split.
    path = root / "mimic-cxr-2.0.0-split.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    cycle = ["train", "validate", "test"]
    lines = [lines[0]] + [
        ",".join([*ln.split(",")[:3], cycle[i % 3]]) for i, ln in enumerate(lines[1:])
    ]
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    for official in (True, False):
        out = tmp_path / f"out-{official}"
        run(
            config(
                [{"kind": "mimic-cxr", "path": str(root)}], out, split={"use_official": official}
            )
        )
        rows = read_table(str(out), columns=["patient_id", "split"]).to_pylist()
        splits_of: dict[str, set] = {}
        for r in rows:
            splits_of.setdefault(r["patient_id"], set()).add(r["split"])
        assert len(rows) == 80
        assert all(len(v) == 1 for v in splits_of.values()), splits_of
        assert len({s for v in splits_of.values() for s in v}) >= 2  # the test could fail


def test_preprocess_job_through_ray_job_submit(ray_cluster, medray_home):
    cmd = [
        sys.executable, "-m", "medray.cli.main", "job", "submit", "--",
        "python", "-m", "jobs.preprocess", "--config", "jobs/configs/preprocess_synthetic.yaml",
        "name=test-submit",
    ]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=os.environ)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-4000:]
    assert (
        "MedRay preprocess summary" in log and "MapBatches(process_batch)->Write" in log
    )  # Ray's progress
    summary = json.loads((medray_home / "data" / "test-submit" / "summary.json").read_text())
    assert accounting_holds(summary)
    assert summary["cluster_nodes"] == 3 and len(summary["nodes_used"]) >= 2, summary[
        "rows_per_node"
    ]
    assert set(summary["generated_sources"]) <= {"mimic-cxr", "vqa-rad", "slake", "medmcqa"}
    assert {k for k, v in summary["per_source"].items() if v["written"]} == {
        "mimic-cxr",
        "vqa-rad",
        "slake",
        "medmcqa",
    }
    assert (
        read_table(str(medray_home / "data" / "test-submit"), columns=["sample_id"]).num_rows
        == summary["counts"]["written"]
    )
