"""Synthetic datasets in their real on-disk layouts: planning and annotation files.

Generation runs in two steps. *Planning* (here, cheap, sequential) decides everything
about every sample from ``numpy.random.default_rng([seed, kind, index])``: ids, splits,
findings, questions, and one :class:`ImageJob` per image. *Rendering*
(:func:`render`, parallel) draws each image from its own seed. The annotation files are
written after rendering, because boxes come from the drawing. Every random stream is
keyed by the sample index, so the first k samples of a run with n > k are those of a
run with n = k, and the same seed always gives the same bytes.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io as _io
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image

from medray.data.records import hash_unit
from medray.data.synth.anatomy import draw_cxr, draw_slice
from medray.data.synth.text import (
    cxr_questions,
    sample_findings,
    slice_questions,
)
from medray.data.text_qa import DESCRIPTIONS

KIND_IDS = {"mimic-cxr": 1, "vqa-rad": 2, "slake": 3, "medmcqa": 4}
DEFAULT_SIZE = {"mimic-cxr": 512, "vqa-rad": 384, "slake": 384}


@dataclass(frozen=True)
class ImageJob:
    """One image to draw: where it goes and everything that decides its pixels."""

    rel: str
    seed: tuple[int, ...]
    size: int
    drawing: str  # "cxr" | "slice"
    params: dict[str, Any]
    mode: str = "L"  # L or RGB (VQA-RAD's JPEGs are 3-channel)
    quality: int = 92


@dataclass
class Plan:
    """A planned dataset: images to render and a function writing the annotation files."""

    jobs: list[ImageJob] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def render(job: ImageJob) -> tuple[bytes, list[tuple[str, tuple[float, float, float, float]]]]:
    """Draw one image: ``(JPEG bytes, boxes as (label, (x1, y1, x2, y2)) fractions)``."""
    rng = np.random.default_rng(list(job.seed))
    if job.drawing == "cxr":
        drawn = draw_cxr(rng, job.size, job.params["findings"], job.params.get("attrs"))
    else:
        p = job.params
        drawn = draw_slice(rng, job.size, p["modality"], p["region"], p["lesions"])
    img = Image.fromarray(drawn.pixels, "L")
    if job.mode == "RGB":
        img = img.convert("RGB")
    buf = _io.BytesIO()
    img.save(buf, "JPEG", quality=job.quality)
    return buf.getvalue(), drawn.boxes


def gzip_bytes(data: bytes) -> bytes:
    """gzip with a fixed timestamp, so equal content gives equal files."""
    return gzip.compress(data, mtime=0)


def csv_bytes(header: list[str], rows: list[list[Any]]) -> bytes:
    buf = _io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue().encode()


def uuidish(*parts: Any) -> str:
    h = hashlib.sha1("/".join(map(str, parts)).encode()).hexdigest()[:40]
    return "-".join(h[i : i + 8] for i in range(0, 40, 8))


# ------------------------------------------------------------------------------ VQA-RAD


def _slice_params(
    rng: np.random.Generator, modalities: tuple[str, ...], regions: tuple[str, ...]
) -> dict:
    modality = modalities[int(rng.integers(len(modalities)))]
    region = regions[int(rng.integers(len(regions)))]
    lesions: list[str] = []
    if rng.random() < 0.5:
        lesions.append("left" if rng.random() < 0.5 else "right")
        if rng.random() < 0.2:
            lesions.append("right" if lesions[0] == "left" else "left")
    return {"modality": modality, "region": region, "lesions": lesions}


def plan_vqa_rad(n: int, seed: int, size: int, layout: str = "mevf") -> Plan:
    """VQA-RAD: n images (chest X-rays, head and abdomen CT/MRI) with their questions."""
    plan = Plan()
    folder = "images" if layout == "mevf" else "VQA_RAD Image Folder"
    questions = []
    organ_code = {"chest": "CHEST", "head": "HEAD", "abdomen": "ABD"}
    for i in range(n):
        rng = np.random.default_rng([seed, KIND_IDS["vqa-rad"], i])
        name = f"synpic{100000 + i}.jpg"
        test = hash_unit(name, f"synth{seed}") < 0.2  # split by image: no image in both sets
        region = ("chest", "head", "abdomen")[int(rng.integers(3))]
        if region == "chest":
            findings = sample_findings(rng)
            qs = cxr_questions(rng, findings)
            qs.append(
                {
                    "question": "What imaging modality was used?",
                    "answer": "X-ray",
                    "answer_type": "OPEN",
                    "question_type": "MODALITY",
                }
            )
            job = ImageJob(
                f"{folder}/{name}", (seed, 2, i, 7), size, "cxr", {"findings": findings}, "RGB"
            )
        else:
            params = _slice_params(rng, ("ct", "mri"), (region,))
            qs = slice_questions(rng, params["modality"], region, params["lesions"])
            job = ImageJob(f"{folder}/{name}", (seed, 2, i, 7), size, "slice", params, "RGB")
        plan.jobs.append(job)
        for q in qs:
            questions.append(
                {
                    "qid": len(questions) + 1,
                    "image_name": name,
                    "image_organ": organ_code[region],
                    "answer": q["answer"],
                    "answer_type": q["answer_type"],
                    "question_type": q["question_type"],
                    "question": q["question"],
                    "phrase_type": "freeform",
                    "test": test,
                }
            )
    plan.state = {"questions": questions}
    return plan


def vqa_rad_files(plan: Plan, layout: str) -> dict[str, bytes]:
    """``mevf``: trainset.json/testset.json (+ images/); ``osf``: the public JSON (+ image folder)."""
    qs = plan.state["questions"]
    fields = (
        "qid",
        "image_name",
        "image_organ",
        "answer",
        "answer_type",
        "question_type",
        "question",
        "phrase_type",
    )
    if layout == "mevf":
        train = [{k: q[k] for k in fields} for q in qs if not q["test"]]
        test = [{k: q[k] for k in fields} for q in qs if q["test"]]
        return {
            "trainset.json": json.dumps(train).encode(),
            "testset.json": json.dumps(test).encode(),
        }
    osf = []
    for q in qs:
        osf.append(
            {
                "qid": str(q["qid"]),
                "phrase_type": "test_freeform" if q["test"] else "freeform",
                "qid_linked_id": uuidish("vqa-rad", q["qid"]),
                "image_case_url": "https://medpix.nlm.nih.gov/case?id=synthetic",
                "image_name": q["image_name"],
                "image_organ": q["image_organ"],
                "evaluation": "not evaluated",
                "question": q["question"],
                "question_rephrase": "NULL",
                "question_relation": "NULL",
                "question_frame": "NULL",
                "question_type": q["question_type"],
                "answer": q["answer"],
                "answer_type": q["answer_type"],
            }
        )
    return {"VQA_RAD Dataset Public.json": json.dumps(osf, indent=2).encode()}


# -------------------------------------------------------------------------------- SLAKE

SLAKE_LOCATION = {"head": "Brain", "chest": "Lung", "abdomen": "Abdomen"}
SLAKE_MODALITIES = ("ct", "mri", "x-ray")


def plan_slake(n: int, seed: int, size: int) -> Plan:
    """SLAKE: n images (CT, MRI, X-ray) with English and Chinese questions and boxes."""
    plan = Plan()
    entries: dict[str, list[dict]] = {"train.json": [], "validate.json": [], "test.json": []}
    qid = 0
    for i in range(n):
        rng = np.random.default_rng([seed, KIND_IDS["slake"], i])
        u = hash_unit(f"xmlab{i}", f"synth{seed}")
        fname = "train.json" if u < 0.7 else "validate.json" if u < 0.85 else "test.json"
        r = rng.random()
        # One image in three each of chest X-ray, CT and MRI: with a uniform mix, the closed
        # modality question below (the true modality or one of the other two, half and half)
        # has P(Yes) = 0.5 for every wording, so its text alone says nothing about the answer.
        if r < 1 / 3:  # chest X-ray with a nodule (or not): "lesion" questions still apply
            side = ("left" if rng.random() < 0.5 else "right") if rng.random() < 0.5 else None
            params = {"modality": "x-ray", "region": "chest", "lesions": [side] if side else []}
            job = ImageJob(
                f"imgs/xmlab{i}/source.jpg",
                (seed, 3, i, 7),
                size,
                "cxr",
                {"findings": {"nodule": side} if side else {}},
            )
        else:
            mods = ("ct",) if r < 2 / 3 else ("mri",)
            regions = ("head", "chest", "abdomen") if mods == ("ct",) else ("head", "abdomen")
            params = _slice_params(rng, mods, regions)
            job = ImageJob(f"imgs/xmlab{i}/source.jpg", (seed, 3, i, 7), size, "slice", params)
        plan.jobs.append(job)
        for q in slice_questions(
            rng, params["modality"], params["region"], params["lesions"], SLAKE_MODALITIES
        ):
            variants = [("en", q["question"], q["answer"])]
            if q.get("zh"):
                variants.append(("zh", *q["zh"]))
            for lang, question, answer in variants:
                entries[fname].append(
                    {
                        "img_id": i,
                        "img_name": f"xmlab{i}/source.jpg",
                        "question": question,
                        "answer": answer,
                        "q_lang": lang,
                        "location": SLAKE_LOCATION[params["region"]],
                        "modality": {"ct": "CT", "mri": "MRI", "x-ray": "X-Ray"}[
                            params["modality"]
                        ],
                        "answer_type": q["answer_type"],
                        "base_type": "vqa",
                        "content_type": q["content_type"],
                        "triple": ["vhead", "_", "_"],
                        "qid": qid,
                    }
                )
                qid += 1
    plan.state = {"entries": entries}
    return plan


def slake_files(plan: Plan, boxes: dict[str, list], size: int) -> dict[str, bytes]:
    files = {
        name: json.dumps(items, ensure_ascii=False).encode()
        for name, items in plan.state["entries"].items()
    }
    for rel, bxs in boxes.items():
        det = [
            {
                label.title() if label.islower() else label: [
                    round(x1 * size, 1),
                    round(y1 * size, 1),
                    round((x2 - x1) * size, 1),
                    round((y2 - y1) * size, 1),
                ]
            }
            for label, (x1, y1, x2, y2) in bxs
        ]
        files[rel.rsplit("/", 1)[0] + "/detection.json"] = json.dumps(det).encode()
    return files


# ------------------------------------------------------------------------------ MedMCQA

MCQ_TEMPLATES = (
    "Which chest X-ray finding is described as {desc}?",
    "A chest radiograph shows {desc}. What is the most likely finding?",
    "{desc_cap} on a chest film is characteristic of:",
)


def medmcqa_files(n: int, seed: int) -> dict[str, bytes]:
    """MedMCQA JSON lines: train.json, dev.json and test.json (test without answers)."""
    names = sorted(DESCRIPTIONS)
    out: dict[str, list[str]] = {"train.json": [], "dev.json": [], "test.json": []}
    for i in range(n):
        rng = np.random.default_rng([seed, KIND_IDS["medmcqa"], i])
        finding = names[int(rng.integers(len(names)))]
        desc = DESCRIPTIONS[finding][int(rng.integers(len(DESCRIPTIONS[finding])))]
        template = MCQ_TEMPLATES[int(rng.integers(len(MCQ_TEMPLATES)))]
        others = [f for f in names if f != finding]
        distractors = [others[int(k)] for k in rng.choice(len(others), 3, replace=False)]
        options = [finding, *distractors]
        order = rng.permutation(4)
        options = [options[int(k)] for k in order]
        cop = options.index(finding) + 1
        qid = uuidish("medmcqa", seed, i)
        u = hash_unit(qid, f"synth{seed}")
        fname = "train.json" if u < 0.8 else "dev.json" if u < 0.9 else "test.json"
        item = {
            "question": template.format(desc=desc, desc_cap=desc[0].upper() + desc[1:]),
            "exp": f"{finding.capitalize()} is characterised by {desc}.",
            "cop": cop,
            "opa": options[0],
            "opb": options[1],
            "opc": options[2],
            "opd": options[3],
            "subject_name": "Radiology",
            "topic_name": finding.title(),
            "id": qid,
            "choice_type": "single",
        }
        if fname == "test.json":  # the public test set has no answers
            del item["cop"], item["exp"]
        out[fname].append(json.dumps(item))
    return {k: ("\n".join(v) + "\n").encode() if v else b"" for k, v in out.items()}
