"""Synthetic MIMIC-CXR in its real layout: the plan of studies and images, and the
annotation files (metadata, split, CheXpert labels, reports). Shared planning types and
helpers: :mod:`medray.data.synth.layouts`."""

from __future__ import annotations

import numpy as np

from medray.data.records import hash_split
from medray.data.synth.anatomy import sample_cxr_attrs
from medray.data.synth.layouts import KIND_IDS, ImageJob, Plan, csv_bytes, gzip_bytes, uuidish
from medray.data.synth.text import (
    CHEXPERT,
    DISPLAY,
    NO_FINDING,
    chexpert_labels,
    cxr_report,
    mimic_report_text,
    sample_findings,
)


def plan_mimic(n: int, seed: int, size: int) -> Plan:
    """MIMIC-CXR-JPG: patients with 1-3 studies of 1-2 frontal images each, n images."""
    plan = Plan()
    images, studies = [], []
    j = 0
    while len(images) < n:
        rng = np.random.default_rng([seed, KIND_IDS["mimic-cxr"], j])
        subject = str(10_000_000 + (j * 104_729) % 9_000_000)
        split = hash_split(subject, {"train": 0.8, "validation": 0.1, "test": 0.1}, f"synth{seed}")
        for k in range(1 + int(rng.integers(3))):
            if len(images) >= n:
                break
            study = str(50_000_000 + (len(studies) * 7_919) % 10_000_000)
            findings = sample_findings(rng)
            # One set of attributes per study: all its images show what its report says.
            attrs = sample_cxr_attrs(rng, findings)
            text, impression = cxr_report(findings, attrs, rng)
            with_findings = rng.random() > 0.1  # some real reports have no FINDINGS section
            uncertain = "Atelectasis" if rng.random() < 0.05 else None
            studies.append(
                {
                    "subject": subject,
                    "study": study,
                    "findings": findings,
                    "report": mimic_report_text(text, impression, with_findings),
                    "uncertain": uncertain,
                }
            )
            for m in range(1 + int(rng.random() < 0.4)):
                if len(images) >= n:
                    break
                dicom = uuidish(seed, j, k, m)
                rel = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"
                images.append(
                    {
                        "dicom": dicom,
                        "subject": subject,
                        "study": study,
                        "split": split,
                        "view": "PA" if m == 0 else "AP",
                        "rel": rel,
                    }
                )
                plan.jobs.append(
                    ImageJob(
                        rel,
                        (seed, KIND_IDS["mimic-cxr"], j, k, m, 7),
                        size,
                        "cxr",
                        {"findings": findings, "attrs": attrs},
                    )
                )
        j += 1
    plan.state = {"images": images, "studies": studies}
    return plan


def mimic_files(plan: Plan, boxes: dict[str, list], size: int) -> dict[str, bytes]:
    """The annotation files of a planned MIMIC-CXR-JPG dataset (relative path -> bytes)."""
    images, studies = plan.state["images"], plan.state["studies"]
    meta = [
        [
            im["dicom"],
            im["subject"],
            im["study"],
            "CHEST (PA AND LAT)",
            im["view"],
            size,
            size,
            "21800506",
            "213014.531",
            "Chest (PA and Lateral)",
            "postero-anterior" if im["view"] == "PA" else "antero-posterior",
            "Erect",
        ]
        for im in images
    ]
    split_name = {"train": "train", "validation": "validate", "test": "test"}
    split_rows = [
        [im["dicom"], im["study"], im["subject"], split_name[im["split"]]] for im in images
    ]
    labels = list(CHEXPERT_COLUMNS)
    chex = []
    for st in studies:
        pos = set(chexpert_labels(st["findings"]))
        row = []
        for name in labels:
            if name in pos:
                row.append("1.0")
            elif name == st["uncertain"]:
                row.append("-1.0")
            elif name in ("Pleural Effusion", "Pneumothorax", "Cardiomegaly") and pos != {
                NO_FINDING
            }:
                row.append("0.0")  # the report states these negatives
            else:
                row.append("")
        chex.append([st["subject"], st["study"], *row])
    ms_rows = []
    by_dicom = {im["rel"]: im for im in images}
    for rel, bxs in sorted(boxes.items()):
        im = by_dicom[rel]
        for label, (x1, y1, x2, y2) in bxs:
            ms_rows.append(
                [
                    im["dicom"],
                    CHEXPERT[label],
                    f"{DISPLAY[label]}",
                    rel,
                    round(x1 * size),
                    round(y1 * size),
                    round((x2 - x1) * size),
                    round((y2 - y1) * size),
                    size,
                    size,
                    split_name[im["split"]],
                ]
            )
    files = {
        "mimic-cxr-2.0.0-metadata.csv.gz": gzip_bytes(
            csv_bytes(
                [
                    "dicom_id",
                    "subject_id",
                    "study_id",
                    "PerformedProcedureStepDescription",
                    "ViewPosition",
                    "Rows",
                    "Columns",
                    "StudyDate",
                    "StudyTime",
                    "ProcedureCodeSequence_CodeMeaning",
                    "ViewCodeSequence_CodeMeaning",
                    "PatientOrientationCodeSequence_CodeMeaning",
                ],
                meta,
            )
        ),
        "mimic-cxr-2.0.0-split.csv.gz": gzip_bytes(
            csv_bytes(["dicom_id", "study_id", "subject_id", "split"], split_rows)
        ),
        "mimic-cxr-2.0.0-chexpert.csv.gz": gzip_bytes(
            csv_bytes(["subject_id", "study_id", *labels], chex)
        ),
        "MS_CXR_Local_Alignment_v1.1.0.csv": csv_bytes(
            [
                "dicom_id",
                "category_name",
                "label_text",
                "path",
                "x",
                "y",
                "w",
                "h",
                "image_width",
                "image_height",
                "split",
            ],
            ms_rows,
        ),
    }
    for st in studies:
        files[f"files/p{st['subject'][:2]}/p{st['subject']}/s{st['study']}.txt"] = st[
            "report"
        ].encode()
    return files


CHEXPERT_COLUMNS = (
    "Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
    "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
    "Pneumothorax", "Support Devices",
)  # fmt: skip
