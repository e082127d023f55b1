"""Readers on the real samples in ../shared/data and on synthetic data in the same layouts."""

from __future__ import annotations

import gzip
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from medray.data.config import SourceSpec, SplitSettings
from medray.data.readers import read_source
from medray.data.records import LayoutError
from medray.data.reports import findings_impression
from medray.data.synth import generate

pytestmark = pytest.mark.unit


def read(kind: str, path: Path, **opts):
    filtered: Counter = Counter()
    spec = SourceSpec(kind=kind, path=str(path), **opts)
    recs = list(read_source(spec, str(path), opts.pop("split", SplitSettings()), filtered))
    return recs, filtered


# ---------------------------------------------------------------- real samples


def test_real_vqa_rad_mevf_split(shared_data):
    recs, _ = read("vqa-rad", shared_data / "vqa_rad")
    assert len(recs) == 500
    assert Counter(r["split"] for r in recs) == {"train": 412, "test": 88}  # the official split
    assert Counter(r["answer_type"] for r in recs) == {"closed": 271, "open": 229}  # "CLOSED " too
    assert all(isinstance(r["answer"], str) for r in recs)  # two answers are numbers in the JSON
    assert {r["organ"] for r in recs} == {"head", "chest", "abdomen"}
    assert all((shared_data / "vqa_rad" / r["image"]).is_file() for r in recs)
    assert len({r["sample_id"] for r in recs}) == 500


def test_real_slake_annotations_and_language_filter(shared_data):
    recs, _ = read("slake", shared_data / "slake")
    assert Counter(r["split"] for r in recs) == {"train": 142, "validation": 24, "test": 166}
    langs = Counter(r["language"] for r in recs)
    assert set(langs) == {"en", "zh"}
    assert all(
        r["image"].startswith("imgs/xmlab") and r["image"].endswith("/source.jpg") for r in recs
    )
    assert not any((shared_data / "slake" / r["image"]).exists() for r in recs)  # no images shipped
    en, filtered = read("slake", shared_data / "slake", languages=("en",))
    assert len(en) == langs["en"] and filtered["language"] == langs["zh"]
    assert {r["modality"] for r in recs} <= {"mri", "ct", "x-ray"}


def test_real_pubmedqa(shared_data):
    recs, _ = read("pubmedqa", shared_data / "pubmedqa")
    assert len(recs) == 45
    assert Counter(r["answer"] for r in recs) == {"yes": 24, "no": 13, "maybe": 8}
    assert all(r["task"] == "mcq" and r["answer"] in r["choices"] and r["context"] for r in recs)


def test_generic_jsonl_with_real_nih_pngs(shared_data, tmp_path):
    repo = Path(__file__).resolve().parents[2]
    recs, _ = read(
        "jsonl",
        repo / "datasets/samples/nih_cxr14_vqa.jsonl",
        image_root=str(shared_data / "nih_chestxray14/images"),
    )
    assert len(recs) == 6
    assert all(Path(r["root"], r["image"]).is_file() for r in recs)
    assert {r["answer_type"] for r in recs} == {"open", "choice"}
    # Bad lines become rejected records with the reason, never exceptions or silence.
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"id": "a", "image": "x.png", "question": "q?", "answer": "yes"}\n'
        "{not json\n"
        '{"id": "b", "image": "x.png", "question": "q?"}\n'
        '{"id": "c", "question": "q?", "answer": "a", "choices": "a,b"}\n'
    )
    recs, _ = read("jsonl", bad)
    assert next(r.get("reject") for r in recs) is None
    assert recs[1]["reject"].startswith("bad.jsonl: unreadable row: line 2")
    assert recs[2]["reject"] == "missing field: answer"
    assert recs[3]["reject"] == "invalid field: choices must be a list of strings"


def test_missing_folder_or_layout_is_a_clear_error(tmp_path):
    with pytest.raises(LayoutError, match="not a VQA-RAD folder"):
        read("vqa-rad", tmp_path)
    with pytest.raises(LayoutError, match="metadata.csv"):
        read("mimic-cxr", tmp_path)


def test_report_sections_are_extracted():
    report = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)

 INDICATION:  ___ with cough

 FINDINGS:

 There is a small left pleural effusion.  The heart
 is normal in size.

 IMPRESSION:  Small left effusion.
"""
    f, i = findings_impression(report)
    assert f == "There is a small left pleural effusion. The heart is normal in size."
    assert i == "Small left effusion."
    assert findings_impression(" IMPRESSION:\n No acute process.\n") == (None, "No acute process.")
    assert findings_impression("WET READ: nothing") == (None, None)


# ------------------------------------------------------ synthetic, same readers


def test_synthetic_mimic_read_back(tmp_path):
    out = tmp_path / "mimic"
    generate("mimic-cxr", out, n=25, seed=3, image_size=64)
    assert (out / "mimic-cxr-2.0.0-metadata.csv.gz").is_file()
    jpgs = sorted(out.glob("files/p1?/p*/s*/*.jpg"))
    assert len(jpgs) == 25
    recs, _ = read("mimic-cxr", out)
    assert len(recs) == 25 and all(r["task"] == "report" for r in recs)
    assert {str(out / r["image"]) for r in recs} == {str(p) for p in jpgs}
    assert all((out / r["report"]).is_file() for r in recs)
    # CheXpert labels and MS-CXR boxes come through; splits are per patient.
    assert any(r["labels"] == ["No Finding"] for r in recs)
    assert any(r.get("boxes") for r in recs)
    by_patient: dict[str, set] = {}
    for r in recs:
        by_patient.setdefault(r["patient_id"], set()).add(r["split"])
    assert all(len(s) == 1 for s in by_patient.values())


def test_mimic_patient_split_conflicts_resolve_to_one_split(tmp_path):
    out = tmp_path / "mimic"
    generate("mimic-cxr", out, n=40, seed=1, image_size=64)
    recs, _ = read("mimic-cxr", out)
    counts = Counter(r["patient_id"] for r in recs)
    patient = next(p for p, n in counts.items() if n >= 2)
    dicoms = [r["original_id"] for r in recs if r["patient_id"] == patient]
    # Corrupt the official split CSV: one image of the patient in train, one in test.
    path = out / "mimic-cxr-2.0.0-split.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    fixed = [lines[0]]
    for line in lines[1:]:
        d = line.split(",")
        if d[0] == dicoms[0]:
            d[3] = "train"
        elif d[0] == dicoms[1]:
            d[3] = "test"
        fixed.append(",".join(d))
    path.write_bytes(gzip.compress(("\n".join(fixed) + "\n").encode()))
    recs, _ = read("mimic-cxr", out)
    assert {r["split"] for r in recs if r["patient_id"] == patient} == {"test"}
    # The view filter drops rows on purpose, and counts them.
    pa_only, filtered = read("mimic-cxr", out, views=("PA",))
    assert len(pa_only) + filtered["view"] == 40 and filtered["view"] > 0


@pytest.mark.parametrize("layout", ["mevf", "osf"])
def test_synthetic_vqa_rad_both_layouts(tmp_path, layout):
    out = tmp_path / layout
    generate("vqa-rad", out, n=12, seed=0, image_size=64, layout=layout)
    marker = "trainset.json" if layout == "mevf" else "VQA_RAD Dataset Public.json"
    assert (out / marker).is_file()
    recs, _ = read("vqa-rad", out)
    assert len({r["image"] for r in recs}) == 12
    assert all((out / r["image"]).is_file() for r in recs)
    assert {r["answer_type"] for r in recs} == {"closed", "open"}
    assert "test" in {r["split"] for r in recs} and "train" in {r["split"] for r in recs}
    # Split by image: no image has questions in two splits.
    per_image: dict[str, set] = {}
    for r in recs:
        per_image.setdefault(r["image"], set()).add(r["split"])
    assert all(len(s) == 1 for s in per_image.values())


def test_both_vqa_rad_layouts_hold_the_same_questions(tmp_path):
    generate("vqa-rad", tmp_path / "a", n=10, seed=4, image_size=64, layout="mevf")
    generate("vqa-rad", tmp_path / "b", n=10, seed=4, image_size=64, layout="osf")
    a, _ = read("vqa-rad", tmp_path / "a")
    b, _ = read("vqa-rad", tmp_path / "b")

    def key(r):
        return (
            r["original_id"],
            r["image"].rsplit("/")[-1],
            r["question"],
            r["answer"],
            r["split"],
        )

    assert sorted(map(key, a)) == sorted(map(key, b))


def test_synthetic_slake_read_back(tmp_path):
    out = tmp_path / "slake"
    generate("slake", out, n=15, seed=2, image_size=64)
    recs, _ = read("slake", out)
    assert {r["language"] for r in recs} == {"en", "zh"}
    assert all((out / r["image"]).is_file() and (out / r["detection"]).is_file() for r in recs)
    boxes = json.loads((out / recs[0]["detection"]).read_text())
    assert all(len(next(iter(b.values()))) == 4 for b in boxes)


def test_synthetic_medmcqa_read_back(tmp_path):
    out = tmp_path / "medmcqa"
    generate("medmcqa", out, n=60, seed=0)
    recs, _ = read("medmcqa", out)
    lines = sum(1 for f in ("train.json", "dev.json") for _ in (out / f).read_text().splitlines())
    assert len(recs) == lines and {r["split"] for r in recs} <= {"train", "validation"}
    assert all(r["answer"] in r["choices"] and len(r["choices"]) == 4 for r in recs)
    # The public test file has no answers: read explicitly, every row is rejected with why.
    with_test, _ = read("medmcqa", out, files=("test.json",))
    assert with_test and all(r["reject"] == "missing field: cop" for r in with_test)


def test_copied_real_layout_with_generated_slake_images(shared_data, tmp_path):
    """The real SLAKE annotations become usable once images sit at imgs/xmlabN/source.jpg."""
    dst = tmp_path / "slake"
    shutil.copytree(shared_data / "slake", dst)
    generate("slake", tmp_path / "gen", n=1, seed=0, image_size=64)
    src_img = tmp_path / "gen/imgs/xmlab0/source.jpg"
    recs, _ = read("slake", dst)
    for rel in {r["image"] for r in recs}:
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src_img, dst / rel)
    assert all((dst / r["image"]).is_file() for r in recs)
