"""MIMIC-CXR-JPG reader: metadata / split / CheXpert CSVs, JPEGs and free-text reports.

Layout (PhysioNet ``mimic-cxr-jpg/2.x``; reports from ``mimic-cxr-reports.zip``):

```
mimic-cxr-2.0.0-metadata.csv[.gz]   dicom_id, subject_id, study_id, ViewPosition, Rows, Columns, ...
mimic-cxr-2.0.0-split.csv[.gz]      dicom_id, study_id, subject_id, split (train|validate|test)
mimic-cxr-2.0.0-chexpert.csv[.gz]   subject_id, study_id, <14 CheXpert labels: 1.0 / 0.0 / -1.0 / blank>
files/pXX/pSSSSSSSS/sTTTTTTTT/<dicom_id>.jpg
files/pXX/pSSSSSSSS/sTTTTTTTT.txt   the study's report (FINDINGS / IMPRESSION sections)
MS_CXR_Local_Alignment_v1.1.0.csv   optional MS-CXR boxes: dicom_id, category_name, x, y, w, h, image_width, image_height
```

One row per image (task ``report``). The split is the official split CSV's, made
patient-consistent: a patient the CSV places in several splits goes wholly to the most
held-out one (test > validation > train), and images the CSV does not list follow their
patient (or a hash of the patient id). No patient ever straddles two splits.
"""

from __future__ import annotations

import io as _io
import logging
from collections import Counter, defaultdict
from collections.abc import Iterator
from typing import Any

import pandas as pd

from medray.data import io
from medray.data.config import SourceSpec, SplitSettings
from medray.data.records import (
    SPLIT_RANK,
    LayoutError,
    hash_split,
    normalize_split,
    record,
    rejected,
)

log = logging.getLogger(__name__)

PREFIX = "mimic-cxr-2.0.0-"
CHEXPERT_LABELS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
MS_CXR_FILE = "MS_CXR_Local_Alignment_v1.1.0.csv"


def find_table(root: str, stem: str) -> str | None:
    """``<root>/mimic-cxr-2.0.0-<stem>.csv.gz`` or ``.csv``, whichever exists."""
    for suffix in (".csv.gz", ".csv"):
        loc = io.join(root, f"{PREFIX}{stem}{suffix}")
        if io.is_file(loc):
            return loc
    return None


def read_csv(location: str, usecols: list[str] | None = None) -> pd.DataFrame:
    """A CSV (gzip or plain) as strings, from any filesystem."""
    data = io.read_bytes(location)
    compression = "gzip" if location.endswith(".gz") else None
    try:
        return pd.read_csv(
            _io.BytesIO(data),
            dtype=str,
            keep_default_na=False,
            compression=compression,
            usecols=usecols,
        )
    except (ValueError, OSError, pd.errors.ParserError) as e:
        raise LayoutError(f"{location}: unreadable CSV ({e})") from e


def image_path(subject: str, study: str, dicom: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}/{dicom}.jpg"


def report_path(subject: str, study: str) -> str:
    return f"files/p{subject[:2]}/p{subject}/s{study}.txt"


def study_labels(root: str) -> dict[str, tuple[list[str], list[str]]]:
    """study_id -> (positive labels, uncertain labels) from the CheXpert CSV (empty if absent)."""
    loc = find_table(root, "chexpert")
    if loc is None:
        log.warning("%s: no CheXpert label CSV; rows get no labels", root)
        return {}
    df = read_csv(loc)
    names = [c for c in CHEXPERT_LABELS if c in df.columns]
    out = {}
    for rec in df.to_dict("records"):
        pos = [n for n in names if rec[n].strip() in ("1", "1.0")]
        unc = [n for n in names if rec[n].strip() in ("-1", "-1.0")]
        out[rec["study_id"]] = (pos, unc)
    return out


def official_splits(root: str, use_official: bool) -> dict[str, str]:
    """dicom_id -> split from the split CSV (empty when absent or not used)."""
    loc = find_table(root, "split") if use_official else None
    if loc is None:
        return {}
    df = read_csv(loc, usecols=["dicom_id", "split"])
    return {
        d: normalize_split(s) for d, s in zip(df["dicom_id"], df["split"], strict=True) if d and s
    }


def ms_cxr_boxes(location: str) -> dict[str, list[dict[str, Any]]]:
    """dicom_id -> boxes (normalised to the image) from an MS-CXR-style CSV."""
    df = read_csv(location)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for rec in df.to_dict("records"):
        w, h = float(rec["image_width"]), float(rec["image_height"])
        x, y, bw, bh = (float(rec[k]) for k in ("x", "y", "w", "h"))
        out[rec["dicom_id"]].append(
            {
                "label": rec.get("category_name") or rec.get("label_text"),
                "x1": x / w,
                "y1": y / h,
                "x2": (x + bw) / w,
                "y2": (y + bh) / h,
            }
        )
    return dict(out)


def read_mimic_cxr(
    spec: SourceSpec, root: str, split: SplitSettings, filtered: Counter
) -> Iterator[dict[str, Any]]:
    """Yield one raw record per MIMIC-CXR-JPG image (task ``report``)."""
    meta_loc = find_table(root, "metadata")
    if meta_loc is None:
        raise LayoutError(
            f"{root}: not a MIMIC-CXR-JPG folder: {PREFIX}metadata.csv[.gz] is missing"
        )
    meta = read_csv(meta_loc)
    for col in ("dicom_id", "subject_id", "study_id"):
        if col not in meta.columns:
            raise LayoutError(f"{meta_loc}: column {col!r} is missing")
    labels = study_labels(root)
    official = official_splits(root, split.use_official)
    boxes_loc = io.join(root, spec.boxes_file or MS_CXR_FILE)
    boxes = ms_cxr_boxes(boxes_loc) if io.is_file(boxes_loc) else {}
    if spec.boxes_file and not boxes:
        log.warning("%s: no boxes read from %s", root, boxes_loc)
    report_root = io.resolve_location(spec.reports_path, base=root) if spec.reports_path else root
    views = set(spec.views)

    # One split per patient: the most held-out official split any of their images has.
    patient_split: dict[str, str] = {}
    conflicts = 0
    for dicom, subject in zip(meta["dicom_id"], meta["subject_id"], strict=True):
        s = official.get(dicom)
        if not s or not subject:
            continue
        prev = patient_split.get(subject)
        if prev and prev != s:
            conflicts += 1
        if prev is None or SPLIT_RANK[s] < SPLIT_RANK[prev]:
            patient_split[subject] = s
    if conflicts:
        log.warning(
            "%s: split CSV puts %d images in another split than their patient's; "
            "moved to keep every patient in one split",
            root,
            conflicts,
        )

    src = spec.source_name
    if "ViewPosition" not in meta.columns:
        meta["ViewPosition"] = ""
    columns = ("dicom_id", "subject_id", "study_id", "ViewPosition")
    # Row by row over four columns: no per-row dicts of every column (377k rows in full).
    for pos, values in enumerate(zip(*(meta[c] for c in columns), strict=True)):
        rec = dict(zip(columns, values, strict=True))
        dicom, subject, study = (
            rec["dicom_id"].strip(),
            rec["subject_id"].strip(),
            rec["study_id"].strip(),
        )
        if views and rec.get("ViewPosition", "") not in views:
            filtered["view"] += 1
            continue
        gone = [
            k
            for k, v in (("dicom_id", dicom), ("subject_id", subject), ("study_id", study))
            if not v
        ]
        if gone:
            yield rejected(src, root, dicom or f"row{pos}", f"missing field: {gone[0]}", raw=rec)
            continue
        the_split = patient_split.get(subject) or hash_split(subject, split.fractions(), split.salt)
        pos_labels, uncertain = labels.get(study, ([], []))
        extra = {"ViewPosition": rec.get("ViewPosition", "")}
        if uncertain:
            extra["uncertain_labels"] = uncertain
        yield record(
            source=src,
            root=root,
            original_id=dicom,
            task="report",
            split=the_split,
            image=image_path(subject, study, dicom),
            report=report_path(subject, study),
            report_root=report_root if report_root != root else None,
            modality="x-ray",
            organ="chest",
            view=rec.get("ViewPosition") or None,
            labels=pos_labels,
            patient_id=subject,
            study_id=study,
            language="en",
            boxes=boxes.get(dicom),
            box_units="norm" if dicom in boxes else None,
            extra=extra,
        )
