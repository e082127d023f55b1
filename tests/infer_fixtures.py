"""Small preprocessed outputs and LoRA adapters for the batch-inference tests."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from medray.data import output
from medray.data.schema import table_from_rows


def chest_png(seed: int, size: int = 112) -> bytes:
    """A grey square with a bright disc: enough structure for the processor."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (size, size), int(rng.integers(20, 60)))
    x, y = (int(v) for v in rng.integers(25, size - 25, 2))
    ImageDraw.Draw(img).ellipse([x - 12, y - 12, x + 12, y + 12], fill=220)
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "PNG")
    return buf.getvalue()


def vqa_row(i: int, split: str = "test", image: bytes | None = None, **extra) -> dict:
    data = image if image is not None else chest_png(i)
    row = {
        "sample_id": f"t:{i:03d}", "source": "test-vqa", "original_id": str(i), "split": split,
        "task": "vqa", "image": data, "image_format": "png",
        "image_sha256": hashlib.sha256(data).hexdigest(), "image_width": 112, "image_height": 112,
        "modality": "x-ray", "organ": "chest", "question": f"Is there a nodule in region {i}?",
        "answer": "yes" if i % 2 else "no", "answer_type": "closed", "content_type": "abnormality",
        "boxes": [{"label": "Nodule", "x1": 0.2, "y1": 0.2, "x2": 0.5, "y2": 0.5}] if i % 3 == 0 else None,
        "labels": ["nodule"] if i % 2 else [],
    }  # fmt: skip
    row.update(extra)
    return row


def write_output(target: Path, rows: list[dict]) -> str:
    """A committed preprocessed output (``_SUCCESS`` manifest) holding ``rows``."""
    staged = output.begin(str(target), overwrite=True)
    files: dict[str, list[str]] = {}
    for split in sorted({r["split"] for r in rows}):
        rel = f"{split}/part-0.parquet"
        table = table_from_rows([r for r in rows if r["split"] == split])
        output.write_parquet(table, f"{staged.staging}/{rel}")
        files[split] = [rel]
    output.commit(staged, {"files": files, "quarantine": []})
    return str(target)


def corrupt_png(seed: int = 99) -> bytes:
    """PNG bytes cut in half: the header decodes, the pixels do not."""
    good = chest_png(seed)
    return good[: len(good) // 2]


def make_adapter(base_folder: str, out: Path, seed: int = 1) -> str:
    """A LoRA adapter with random (non-zero) weights on the tiny VLM, saved with peft."""
    import torch
    from peft import LoraConfig, get_peft_model

    from medray.models import load_vlm

    torch.manual_seed(seed)
    model, _ = load_vlm(base_folder)
    cfg = LoraConfig(
        r=4, lora_alpha=32, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(model, cfg).save_pretrained(out)
    return str(out)
