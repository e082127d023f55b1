"""A small committed preprocessed output (unified schema + manifest) for the SFT tests.

VQA rows (closed: "Is there a bright disc?", answer from the pixels; open: "Which side?"),
report rows (findings -> impression) and MedMCQA-style rows, in train and test splits.
Test data only; the project's generator makes the realistic layouts.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image, ImageDraw

from medray.data.output import FORMAT, SUCCESS
from medray.data.schema import SCHEMA_VERSION, table_from_rows


def _image(disc: bool, side: str) -> bytes:
    img = Image.new("RGB", (112, 112), (30, 30, 30))
    if disc:
        x = 30 if side == "left" else 82
        ImageDraw.Draw(img).ellipse([x - 18, 38, x + 18, 74], fill=(240, 240, 240))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def _rows(split: str, n: int, start: int) -> list[dict]:
    rows = []
    for i in range(start, start + n):
        disc, side = i % 2 == 0, "left" if (i // 2) % 2 else "right"
        img = _image(disc, side)
        base = {
            "source": "sft-test", "split": split, "image": img, "image_format": "png",
            "image_sha256": hashlib.sha256(img).hexdigest(), "image_width": 112,
            "image_height": 112, "modality": "x-ray", "organ": "chest", "language": "en",
        }  # fmt: skip
        box = [{"label": "disc", "x1": 0.1, "y1": 0.34, "x2": 0.43, "y2": 0.66}] if disc else None
        rows.append(
            {**base, "sample_id": f"sft-test:{i}:q0", "original_id": str(i), "task": "vqa",
             "question": "Is there a bright disc?", "answer": "Yes" if disc else "No",
             "answer_type": "closed", "content_type": "presence", "boxes": box}
        )  # fmt: skip
        rows.append(
            {**base, "sample_id": f"sft-test:{i}:r", "original_id": f"r{i}", "task": "report",
             "findings": f"A bright disc on the {side}. The rest is dark." if disc
             else "The field is dark. No disc.",
             "impression": f"Disc on the {side}." if disc else "Normal."}
        )  # fmt: skip
        choices = ["left", "right", "none"]
        answer = side if disc else "none"
        rows.append(
            {"source": "sft-test", "split": split, "sample_id": f"sft-test:{i}:m",
             "original_id": f"m{i}", "task": "mcq", "question": f"Case {i % 7}: where is the disc?",
             "choices": choices, "answer": answer, "answer_type": "choice",
             "rationale": "It is seen there."}
        )  # fmt: skip
    return rows


def write_sft_data(path: Path, n_train: int = 64, n_test: int = 16) -> Path:
    """Write a committed output at ``path`` (``train`` and ``test`` splits)."""
    files = {}
    for split, n, start in (("train", n_train, 0), ("test", n_test, n_train)):
        (path / split).mkdir(parents=True, exist_ok=True)
        pq.write_table(table_from_rows(_rows(split, n, start)), path / split / "part-0.parquet")
        files[split] = [f"{split}/part-0.parquet"]
    manifest = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "data_dir": "",
        "files": files,
    }
    (path / SUCCESS).write_text(json.dumps(manifest))
    return path
