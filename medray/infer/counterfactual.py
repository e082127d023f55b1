"""Counterfactual images for the faithfulness test: inpaint the region of interest, or a
random region of the same size, and see whether the answer changes.

Pure functions over PIL images and boxes normalised to ``[0, 1]`` (``(x1, y1, x2, y2)``).
The region of interest of a row is chosen by :func:`roi_boxes`: the reference boxes the
question or answer talks about, else the model's own predicted boxes.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

Box = tuple[float, float, float, float]


def _words(text: str | None) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", (text or "").lower()) if len(w) > 2}


def roi_boxes(
    row: Mapping[str, Any], predicted: Sequence[Sequence[float]] = (), source: str = "both"
) -> list[Box]:
    """The boxes whose content the answer should depend on.

    Reference boxes (``row["boxes"]``, dicts ``{label, x1, y1, x2, y2}``) whose label is
    named by the question, the answer or the row's labels; a row with exactly one
    reference box uses it whatever its label. Otherwise (or with ``source="predicted"``)
    the model's predicted boxes. SLAKE rows carry boxes for every organ, so inpainting all
    of them would blank the image: only the named ones count.

    Args:
        row: the input row (``boxes``, ``question``, ``answer``, ``labels``).
        predicted: the model's boxes ``[[x1, y1, x2, y2], ...]`` from the main answer.
        source: ``reference``, ``predicted`` or ``both`` (reference first).
    """
    if source not in ("reference", "predicted", "both"):
        raise ValueError(f"source must be reference, predicted or both, got {source!r}")
    out: list[Box] = []
    if source != "predicted":
        ref = [b for b in (row.get("boxes") or []) if b]
        named = _words(row.get("question")) | _words(row.get("answer"))
        for label in row.get("labels") or []:
            named |= _words(label)
        chosen = [b for b in ref if _words(b.get("label")) & named]
        if not chosen and len(ref) == 1:
            chosen = ref
        out = [_clip((b["x1"], b["y1"], b["x2"], b["y2"])) for b in chosen]
    if not out and source != "reference":
        out = [_clip(tuple(b)) for b in predicted if b is not None and len(b) == 4]
    return [b for b in out if b[2] - b[0] > 0 and b[3] - b[1] > 0]


def _clip(b: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in b)
    return (x1, y1, x2, y2)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(boxes: Sequence[Box], key: str, seed: int = 0, tries: int = 32) -> list[Box]:
    """Boxes of the same sizes as ``boxes`` at random places, overlapping them as little as
    possible (the first of ``tries`` positions with no overlap, else the least overlapping).

    Deterministic: the positions depend only on ``key`` (e.g. the sample id) and ``seed``.
    """
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    out: list[Box] = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        best, best_overlap = None, 2.0
        for _ in range(tries):
            nx, ny = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            cand = (nx, ny, nx + w, ny + h)
            overlap = max((_iou(cand, b) for b in boxes), default=0.0)
            if overlap < best_overlap:
                best, best_overlap = cand, overlap
            if overlap == 0.0:
                break
        out.append(best)  # type: ignore[arg-type]
    return out


def inpaint(image: Image.Image, boxes: Sequence[Box], margin: float = 0.25) -> Image.Image:
    """A copy of ``image`` with every box filled from its surroundings.

    Each box is filled with the mean colour of a ring around it (``margin`` times the box
    size wide), then softened with a blur, so the region's structure is gone but no sharp
    artificial edge or foreign colour is added.
    """
    img = image.convert("RGB")
    arr = np.asarray(img).astype(np.float32)
    height, width = arr.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for x1, y1, x2, y2 in boxes:
        px1, px2 = int(np.floor(x1 * width)), int(np.ceil(x2 * width))
        py1, py2 = int(np.floor(y1 * height)), int(np.ceil(y2 * height))
        if px2 <= px1 or py2 <= py1:
            continue
        mx = max(1, int((px2 - px1) * margin))
        my = max(1, int((py2 - py1) * margin))
        ox1, oy1 = max(0, px1 - mx), max(0, py1 - my)
        ox2, oy2 = min(width, px2 + mx), min(height, py2 + my)
        ring = np.ones((oy2 - oy1, ox2 - ox1), dtype=bool)
        ring[py1 - oy1 : py2 - oy1, px1 - ox1 : px2 - ox1] = False
        outer = arr[oy1:oy2, ox1:ox2][ring]
        fill = outer.mean(axis=0) if outer.size else arr.reshape(-1, 3).mean(axis=0)
        arr[py1:py2, px1:px2] = fill
        mask[py1:py2, px1:px2] = True
    out = Image.fromarray(arr.clip(0, 255).astype(np.uint8))
    if mask.any():
        blurred = out.filter(ImageFilter.GaussianBlur(radius=max(1, min(width, height) // 64)))
        out = Image.composite(blurred, out, Image.fromarray((mask * 255).astype(np.uint8)))
    return out


def blank_like(image: Image.Image) -> Image.Image:
    """A black image of the same size (the text-prior control; the same blank as
    ``medray.train.reasoner_format.row_image(row, blank=True)`` uses in training)."""
    return Image.new("RGB", image.size, (0, 0, 0))
