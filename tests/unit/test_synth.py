"""The synthetic generator: deterministic, real layouts, balanced answers, findings where the boxes say."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from medray.cli.main import cli
from medray.data.reports import findings_impression
from medray.data.synth import SynthError, ensure_synthetic, generate, read_marker
from medray.data.synth.anatomy import CXR_FINDINGS, draw_cxr, draw_slice
from medray.data.synth.layouts import plan_slake, plan_vqa_rad, render
from medray.data.synth.mimic import plan_mimic
from medray.data.synth.text import _NORMAL_IMPRESSION, chexpert_labels
from medray.models.encoders import report_text

pytestmark = pytest.mark.unit


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("kind", ["mimic-cxr", "slake", "vqa-rad", "medmcqa"])
def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, kind):
    kw = {"image_size": 64} if kind != "medmcqa" else {}
    generate(kind, tmp_path / "a", n=8, seed=7, **kw)
    generate(kind, tmp_path / "b", n=8, seed=7, **kw)
    generate(kind, tmp_path / "c", n=8, seed=8, **kw)
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert a == b
    assert a != c


def test_prefix_stable_and_parallel_rendering_is_identical(tmp_path):
    generate("vqa-rad", tmp_path / "small", n=5, seed=1, image_size=64)
    generate("vqa-rad", tmp_path / "big", n=70, seed=1, image_size=64, workers=2)
    generate("vqa-rad", tmp_path / "big1", n=70, seed=1, image_size=64, workers=1)
    small, big = tree_digest(tmp_path / "small"), tree_digest(tmp_path / "big")
    for rel, digest in small.items():
        if rel.startswith("images/"):
            assert big[rel] == digest  # the first samples do not depend on n
    assert big == tree_digest(tmp_path / "big1")  # workers do not change the bytes


def test_refuses_existing_folder_and_bad_arguments(tmp_path):
    generate("medmcqa", tmp_path / "m", n=3)
    with pytest.raises(SynthError, match="already exists"):
        generate("medmcqa", tmp_path / "m", n=3)
    with pytest.raises(SynthError, match="unknown kind"):
        generate("chexpert", tmp_path / "x", n=3)
    with pytest.raises(SynthError, match="n must be at least 1"):
        generate("slake", tmp_path / "x", n=0)


def test_ensure_synthetic_reuses_regenerates_and_never_touches_real_data(tmp_path):
    out = tmp_path / "v"
    assert ensure_synthetic("vqa-rad", out, 4, 0, 64) is True
    assert ensure_synthetic("vqa-rad", out, 4, 0, 64) is False
    assert ensure_synthetic("vqa-rad", out, 6, 0, 64) is True and read_marker(out)["n"] == 6
    real = tmp_path / "real"
    real.mkdir()
    (real / "trainset.json").write_text("[]")
    assert ensure_synthetic("vqa-rad", real, 4, 0, 64) is False
    assert sorted(p.name for p in real.iterdir()) == ["trainset.json"]


def test_closed_answers_are_balanced_per_finding():
    plan = plan_vqa_rad(3000, seed=0, size=64)
    yes, total = Counter(), Counter()
    for q in plan.state["questions"]:
        if q["answer_type"] == "CLOSED":
            total[q["question"]] += 1
            yes[q["question"]] += q["answer"] == "Yes"
    # Group the question texts by finding: every closed question type is near 50/50.
    assert total and all(0.4 <= yes[q] / total[q] <= 0.6 for q in total if total[q] >= 100), {
        q: round(yes[q] / total[q], 2) for q in total
    }
    slake = plan_slake(1500, seed=0, size=64)
    closed = [
        q
        for items in slake.state["entries"].values()
        for q in items
        if q["answer_type"] == "CLOSED"
    ]
    rate = sum(q["answer"] in ("Yes", "是") for q in closed) / len(closed)
    assert 0.4 <= rate <= 0.6


def test_reports_and_labels_say_what_was_drawn(tmp_path):
    generate("mimic-cxr", tmp_path, n=60, seed=2, image_size=64, overwrite=True)
    plan = plan_mimic(60, seed=2, size=64)
    chex = (
        gzip.decompress((tmp_path / "mimic-cxr-2.0.0-chexpert.csv.gz").read_bytes())
        .decode()
        .splitlines()
    )
    header = chex[0].split(",")
    rows = {r.split(",")[1]: r.split(",") for r in chex[1:]}
    for st in plan.state["studies"]:
        positives = {header[i] for i, v in enumerate(rows[st["study"]]) if v == "1.0"}
        assert positives == set(chexpert_labels(st["findings"]))
        path = tmp_path / f"files/p{st['subject'][:2]}/p{st['subject']}/s{st['study']}.txt"
        report = path.read_text().lower()
        for name, side in st["findings"].items():
            words = {"effusion": ("effusion",), "consolidation": ("consolidation",), "nodule": ("nodule",),
                     "pneumothorax": ("pneumothorax",), "cardiomegaly": ("enlarged", "cardiomegaly")}[name]  # fmt: skip
            assert any(w in report for w in words) and (side is None or side in report), (
                name,
                side,
                report,
            )
        if not st["findings"]:
            assert any(i.lower() in report for i in _NORMAL_IMPRESSION), report
        findings = report.split("impression:")[0]
        if "findings:" in findings:  # the negatives recorded as 0.0 are stated
            negatives = {header[i] for i, v in enumerate(rows[st["study"]]) if v == "0.0"}
            stated = {
                "Pleural Effusion": r"no (pleural )?effusion",
                "Pneumothorax": r"no (pleural effusion or |effusion or )?pneumothorax",
                "Cardiomegaly": r"(heart size|cardiac silhouette) is normal|normal heart size",
            }
            for label in negatives:
                assert re.search(stated[label], " ".join(findings.split())), (label, report)


def _report_texts(studies) -> list[str]:
    return [report_text(*findings_impression(st["report"])) for st in studies]


def test_report_texts_are_nearly_unique_and_fit_the_clip_context():
    """Templated reports made retrieval ambiguous (96 distinct texts in 1,070 studies)."""
    from medray.models.loading import load_clip

    studies = plan_mimic(300, seed=0, size=64).state["studies"]
    texts = _report_texts(studies)
    assert len(set(texts)) / len(texts) >= 0.8, len(set(texts)) / len(texts)
    abnormal = [t for t, st in zip(texts, studies, strict=True) if st["findings"]]
    assert len(set(abnormal)) / len(abnormal) >= 0.95
    tokens = load_clip("tiny-clip")[3](texts).numpy()
    assert len({tuple(r) for r in tokens}) == len(set(texts))  # truncation merges none
    assert ((tokens != 0).sum(axis=1) < 77).mean() >= 0.98  # almost none is truncated


_PHRASES = {
    "effusion": r"(small|moderate|large) (left|right) pleural effusion",
    "pneumothorax": r"(small|moderate|large) (left|right) pneumothorax",
    "nodule": r"(\d+) mm (left|right) (upper|mid|lower) zone nodule",
    "consolidation": r"(left|right) (upper|mid|lower) zone consolidation",
    "consolidation_size": r"(small|moderate|large) (?:area of )?(?:dense|patchy) "
    r"(?:consolidation in the |consolidation occupies the )?(?:left|right)",
    "cardiomegaly": r"(mild|moderate|marked) cardiomegaly",
}


def test_report_words_follow_the_drawn_boxes():
    """Side, zone and size words of each finding agree with the box (and pixels) drawn."""
    plan = plan_mimic(300, seed=3, size=64)
    first = {}
    for job in plan.jobs:
        first.setdefault(job.rel.split("/")[3][1:], job)
    seen: dict[str, dict[str, list]] = {}
    for st in plan.state["studies"]:
        data, boxes = render(first[st["study"]])
        pixels = np.asarray(Image.open(io.BytesIO(data)), dtype=float)
        report = st["report"].lower().replace("\n", " ")
        report = " ".join(report.split())
        for label, (x1, y1, x2, y2) in boxes:
            m = re.search(_PHRASES[label], report)
            assert m, (label, report)
            side = st["findings"][label]
            if side:  # the patient's left is on the image's right
                said = m.group(1 if label == "consolidation" else 2)
                assert said == side and ((x1 + x2) / 2 > 0.5) == (side == "left"), report
            box = pixels[int(y1 * 64) : int(y2 * 64) + 1, int(x1 * 64) : int(x2 * 64) + 1]
            if label == "nodule":
                assert abs(int(m.group(1)) - (x2 - x1) / 2.4 * 2 * 250) <= 1  # diameter in mm
            if label in ("nodule", "consolidation"):
                zone = m.group(3) if label == "nodule" else m.group(2)
                seen.setdefault(f"{label}_zone", {}).setdefault(zone, []).append((y1 + y2) / 2)
            value = {
                "effusion": y2 - y1,  # height of the fluid
                "pneumothorax": (box < 20).mean(),  # share of black air in the box
                "nodule": x2 - x1,
                "cardiomegaly": x2 - x1,  # width of the heart
            }.get(label)
            word = m.group(1)
            if label == "consolidation":
                sm = re.search(_PHRASES["consolidation_size"], report)
                if not sm:  # a report without FINDINGS has no size
                    continue
                word, value = sm.group(1), (x2 - x1) * (y2 - y1)
            if label != "nodule":
                seen.setdefault(label, {}).setdefault(word, []).append(value)
    orders = {
        "effusion": ("small", "moderate", "large"),
        "pneumothorax": ("small", "moderate", "large"),
        "consolidation": ("small", "moderate", "large"),
        "cardiomegaly": ("mild", "moderate", "marked"),
        "nodule_zone": ("upper", "mid", "lower"),
        "consolidation_zone": ("upper", "mid", "lower"),
    }
    for key, order in orders.items():
        groups = [seen[key][w] for w in order]
        assert all(len(g) >= 3 for g in groups), (key, [len(g) for g in groups])
        means = [float(np.mean(g)) for g in groups]
        assert means == sorted(means) and means[0] < means[-1], (key, means)
        if key != "pneumothorax":  # box sizes and positions separate the extremes fully
            assert max(groups[0]) < min(groups[-1]), (key, groups)


def test_findings_are_drawn_where_their_boxes_are():
    """The box of each finding differs from the same box mirrored onto the other lung."""
    for i, finding in enumerate(("effusion", "consolidation", "nodule", "pneumothorax")):
        for side in ("left", "right"):
            rng = np.random.default_rng([11, i, side == "left"])
            drawn = draw_cxr(rng, 224, {finding: side})
            plain = draw_cxr(np.random.default_rng([11, i, side == "left"]), 224, {})
            ((label, (x1, y1, x2, y2)),) = drawn.boxes
            assert label == finding
            ys, xs = (
                slice(int(y1 * 224), int(y2 * 224) + 1),
                slice(int(x1 * 224), int(x2 * 224) + 1),
            )
            inside = drawn.pixels[ys, xs].astype(float) - plain.pixels[ys, xs].astype(float)
            outside = drawn.pixels.astype(float) - plain.pixels.astype(float)
            outside[ys, xs] = 0
            # The drawing changes the box a lot and the rest of the image hardly at all.
            assert np.abs(inside).mean() > 8, (finding, side)
            assert np.abs(outside).mean() < 0.1 * np.abs(inside).mean(), (finding, side)
    big = draw_cxr(np.random.default_rng(1), 224, {"cardiomegaly": None})
    small = draw_cxr(np.random.default_rng(1), 224, {})
    assert big.facts["ctr"] > 0.55 > 0.5 > small.facts["ctr"]


def test_slice_lesions_are_ring_enhancing_masses_on_their_side():
    """A CT/MRI lesion is a bright rim around a dark core, on the patient's side it names,
    in every modality and region: a look no normal structure of the slice has."""
    n = 112
    for modality in ("ct", "mri"):
        for region in ("head", "abdomen", "chest"):
            for side in ("left", "right"):
                drawn = draw_slice(np.random.default_rng(3), n, modality, region, [side])
                (x1, y1, x2, y2) = next(b for label, b in drawn.boxes if label == "Lesion")
                cx, cy, rx = (x1 + x2) / 2 * n, (y1 + y2) / 2 * n, (x2 - x1) / 2 * n
                assert (cx > n / 2) == (side == "left"), (modality, region, side)  # radiological
                yy, xx = np.mgrid[0:n, 0:n] + 0.5
                d = np.hypot(xx - cx, yy - cy) / rx
                px = drawn.pixels.astype(float)
                core, rim = px[d < 0.3].mean(), px[(d > 0.7) & (d < 0.9)].mean()
                around = px[(d > 1.3) & (d < 1.8)].mean()
                assert rim - core > 120 and rim - around > 40, (modality, region, side, core, rim)
                assert 22 <= x2 * n - x1 * n <= 30  # about one 28-px visual token at 112 px (v4)


def test_images_are_jpegs_in_the_real_layouts(tmp_path):
    generate("slake", tmp_path / "s", n=4, seed=0, image_size=96)
    img = Image.open(tmp_path / "s/imgs/xmlab0/source.jpg")
    assert img.format == "JPEG" and img.size == (96, 96)
    generate("vqa-rad", tmp_path / "v", n=3, seed=0, image_size=80)
    img = Image.open(next((tmp_path / "v/images").glob("synpic*.jpg")))
    assert img.mode == "RGB" and img.size == (80, 80)
    entries = json.loads((tmp_path / "v/trainset.json").read_text()) + json.loads(
        (tmp_path / "v/testset.json").read_text()
    )
    assert set(entries[0]) == {"qid", "image_name", "image_organ", "answer", "answer_type",
                               "question_type", "question", "phrase_type"}  # fmt: skip
    assert Image.open(io.BytesIO((tmp_path / "s/imgs/xmlab0/source.jpg").read_bytes())).mode == "L"


def test_cli_synth_writes_and_reports(tmp_path):
    res = CliRunner().invoke(
        cli,
        [
            "data",
            "synth",
            "--kind",
            "slake",
            "--n",
            "3",
            "--seed",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--image-size",
            "64",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "Wrote synthetic slake: 3 images" in res.output
    res = CliRunner().invoke(
        cli, ["data", "synth", "--kind", "slake", "--n", "3", "--out", str(tmp_path / "s")]
    )
    assert res.exit_code == 2 and "already exists" in res.output


def test_cxr_findings_cover_the_five_kinds():
    plan = plan_mimic(300, seed=0, size=64)
    seen = Counter(f for st in plan.state["studies"] for f in st["findings"])
    assert set(seen) == set(CXR_FINDINGS)
    assert sum(1 for st in plan.state["studies"] if not st["findings"]) > 0


def test_slake_closed_questions_do_not_give_the_answer_away():
    """The blank-image control can only sit at the majority rate if no question wording
    predicts its answer: every closed English wording is close to half Yes (v4's
    "Is this a X-Ray image?" was always Yes, so a text-only model beat the majority rate)."""
    from collections import defaultdict

    from medray.data.synth.layouts import plan_slake

    plan = plan_slake(1500, seed=0, size=32)
    answers: dict[str, list[bool]] = defaultdict(list)
    modalities: dict[str, int] = defaultdict(int)
    for entries in plan.state["entries"].values():
        for e in entries:
            if e["q_lang"] == "en" and e["answer_type"] == "CLOSED":
                answers[e["question"]].append(e["answer"] == "Yes")
            if e["q_lang"] == "en" and e["question"].startswith("What modality"):
                modalities[e["answer"]] += 1
    assert "Is this an X-Ray image?" in answers and "Is this a X-Ray image?" not in answers
    for question, yes in answers.items():
        assert len(yes) > 100 and 0.42 < sum(yes) / len(yes) < 0.58, (question, len(yes))
    assert all(0.3 < c / 1500 < 0.37 for c in modalities.values()), dict(modalities)
