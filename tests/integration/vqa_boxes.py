"""VQA rows with reference boxes, written as preprocessed-schema Parquet (test data only).

A bright disc (the "nodule") sits left or right on a dark 112x112 image, or is absent;
the question asks whether there is a nodule, and the reference box is the disc's box, so
inpainting that box removes the evidence and a random region of the same size does not.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

SIZE = 112


def _image(present: bool, side: str, seed: int) -> tuple[bytes, list[dict]]:
    rng = np.random.default_rng(seed)
    img = Image.new("L", (SIZE, SIZE), int(rng.integers(20, 40)))
    boxes = []
    if present:
        r = 12
        x = (32 if side == "left" else 80) + int(rng.integers(-4, 5))
        y = 56 + int(rng.integers(-10, 11))
        ImageDraw.Draw(img).ellipse([x - r, y - r, x + r, y + r], fill=230)
        boxes.append(
            {"label": "Nodule", "x1": (x - r) / SIZE, "y1": (y - r) / SIZE,
             "x2": (x + r) / SIZE, "y2": (y + r) / SIZE}
        )  # fmt: skip
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    return buf.getvalue(), boxes


def write_vqa_boxes(path: Path, counts: dict[str, int], seed: int = 0, boxes: bool = True):
    rows, i = [], 0
    for split, n in counts.items():
        for _ in range(n):
            present, side = i % 2 == 0, "left" if (i // 2) % 2 else "right"
            image, bxs = _image(present, side, seed + i)
            rows.append(
                {
                    "sample_id": f"vqa-{i:05d}", "source": "test-vqa", "split": split, "task": "vqa",
                    "image": image, "question": "Is there a nodule in the lung?",
                    "answer": "yes" if present else "no", "answer_type": "closed", "choices": None,
                    "boxes": bxs if boxes else [], "modality": "x-ray", "organ": "chest",
                    "content_type": "presence", "language": "en",
                }
            )  # fmt: skip
            i += 1
    import json

    import pyarrow.parquet as pq

    from medray.data.output import FORMAT, SUCCESS
    from medray.data.schema import SCHEMA_VERSION, table_from_rows

    for r in rows:
        r.update(
            original_id=r["sample_id"], image_format="png", image_width=SIZE, image_height=SIZE,
            source_width=SIZE, source_height=SIZE, image_sha256=hashlib.sha256(r["image"]).hexdigest(),
        )  # fmt: skip
    # A committed output (unified schema + manifest), as jobs.preprocess writes it.
    files = {}
    for split in counts:
        (path / split).mkdir(parents=True, exist_ok=True)
        table = table_from_rows([r for r in rows if r["split"] == split])
        pq.write_table(table, path / split / "part-0.parquet")
        files[split] = [f"{split}/part-0.parquet"]
    manifest = {"format": FORMAT, "schema_version": SCHEMA_VERSION, "data_dir": "", "files": files}
    (path / SUCCESS).write_text(json.dumps(manifest))
    return path
