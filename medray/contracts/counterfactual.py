"""The reasoner's counterfactual images: which region to remove, and how.

Faithfulness asks whether an answer depends on the region it is about: the image is
re-answered once with the region of interest (ROI) inpainted and once with random regions
of the same sizes inpainted. GRPO's counterfactual reward (:mod:`medray.train.rewards`),
GRPO's in-job evaluation (:mod:`medray.train.grpo_eval`) and batch inference, whose
predictions the evaluation report's flip rates read (:mod:`medray.infer.predictor`), all
call :func:`counterfactual_images`, so they remove the same pixels for the same image, row
and seed.

* Region choice (:func:`roi_boxes`): the reference boxes (``row["boxes"]``, dicts
  ``{label, x1, y1, x2, y2}``) whose label the question, the answer or the row's labels
  name, or the only reference box; and/or the model's predicted boxes, in the order the
  ``source`` gives (:data:`SOURCES`). SLAKE rows carry boxes for every organ, so only the
  named ones count.
* Control regions (:func:`random_boxes`): boxes of the same sizes at random places that
  overlap the ROI least, drawn from a generator keyed by the row's ``sample_id`` and
  ``seed`` (never by its position in a batch).
* Inpainting (:func:`inpaint`): every box is filled with the mean colour of a ring around
  it, then blurred, so the structure is gone without a sharp artificial edge.

Boxes are ``(x1, y1, x2, y2)`` normalised to ``[0, 1]``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "SOURCES",
    "Box",
    "counterfactual_images",
    "inpaint",
    "random_boxes",
    "roi_boxes",
]

Box = tuple[float, float, float, float]

# reference: named reference boxes only; predicted: the answer's boxes only;
# both: reference, else predicted; predicted_first: predicted, else reference.
SOURCES = ("reference", "predicted", "both", "predicted_first")
RING = 0.25  # share of the box size used as the ring of background pixels


def _words(text: Any) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", str(text or "").lower()) if len(w) > 2}


def _clip(b: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in b)
    return (x1, y1, x2, y2)


def _reference(row: Mapping[str, Any]) -> list[Box]:
    ref = [b for b in (row.get("boxes") or []) if b is not None]
    if ref and not all(isinstance(b, Mapping) for b in ref):  # bare [x1, y1, x2, y2] lists
        return [_clip(b) for b in ref if len(b) == 4][:1]
    named = _words(row.get("question")) | _words(row.get("answer"))
    for label in row.get("labels") or []:
        named |= _words(label)
    chosen = [b for b in ref if _words(b.get("label")) & named]
    if not chosen and len(ref) == 1:
        chosen = ref
    return [_clip((b["x1"], b["y1"], b["x2"], b["y2"])) for b in chosen]


def roi_boxes(
    row: Mapping[str, Any], predicted: Sequence[Sequence[float]] = (), source: str = "both"
) -> list[Box]:
    """The boxes whose content the answer should depend on (see the module docstring).

    Args:
        row: the input row (``boxes``, ``question``, ``answer``, ``labels``).
        predicted: the model's boxes ``[[x1, y1, x2, y2], ...]`` from its main answer.
        source: one of :data:`SOURCES`.

    Raises:
        ValueError: an unknown ``source``.
    """
    if source not in SOURCES:
        raise ValueError(f"counterfactual source must be one of {SOURCES}, got {source!r}")
    pred = [_clip(b) for b in predicted if b is not None and len(b) == 4]
    order = {
        "reference": [_reference(row)],
        "predicted": [pred],
        "both": [_reference(row), pred],
        "predicted_first": [pred, _reference(row)],
    }[source]
    for boxes in order:
        boxes = [b for b in boxes if b[2] - b[0] > 0 and b[3] - b[1] > 0]
        if boxes:
            return boxes
    return []


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(boxes: Sequence[Box], key: str, seed: int = 0, tries: int = 32) -> list[Box]:
    """Boxes of the same sizes as ``boxes`` at random places, overlapping them as little as
    possible (the first of ``tries`` positions with no overlap, else the least overlapping).

    Deterministic: the positions depend only on ``key`` (the sample id) and ``seed``.
    """
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    out: list[Box] = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        best, best_overlap = (x1, y1, x2, y2), 2.0
        for _ in range(tries):
            nx, ny = rng.uniform(0, 1 - w), rng.uniform(0, 1 - h)
            cand = (nx, ny, nx + w, ny + h)
            overlap = max((_iou(cand, b) for b in boxes), default=0.0)
            if overlap < best_overlap:
                best, best_overlap = cand, overlap
            if overlap == 0.0:
                break
        out.append(best)
    return out


def inpaint(image: Image.Image, boxes: Sequence[Box], margin: float = RING) -> Image.Image:
    """A copy of ``image`` with every box filled from its surroundings, then blurred.

    Each box is filled with the mean colour of a ring around it (``margin`` times the box
    size wide; the image mean for a box covering everything) and softened with a Gaussian
    blur inside the boxes only. A box of under one pixel still covers one pixel.

    Raises:
        ValueError: a box that is not ``(x1, y1, x2, y2)`` inside ``[0, 1]``.
    """
    img = image.convert("RGB")
    arr = np.asarray(img).astype(np.float32)
    height, width = arr.shape[:2]
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        x1, y1, x2, y2 = (float(v) for v in box)
        if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
            raise ValueError(f"box {tuple(box)} is not (x1, y1, x2, y2) inside [0, 1]")
        px1, py1 = int(np.floor(x1 * width)), int(np.floor(y1 * height))
        px2 = max(int(np.ceil(x2 * width)), min(px1 + 1, width))
        py2 = max(int(np.ceil(y2 * height)), min(py1 + 1, height))
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
    out = Image.fromarray(arr.round().clip(0, 255).astype(np.uint8))
    if mask.any():
        blurred = out.filter(ImageFilter.GaussianBlur(radius=max(1, min(width, height) // 64)))
        out = Image.composite(blurred, out, Image.fromarray((mask * 255).astype(np.uint8)))
    return out


def counterfactual_images(
    image: Image.Image,
    row: Mapping[str, Any],
    predicted: Sequence[Sequence[float]] = (),
    *,
    source: str = "both",
    seed: int = 0,
) -> tuple[list[Box], list[Box], Image.Image, Image.Image] | None:
    """``(roi, random, roi_image, random_image)`` for one answered row, or None when the
    row has no region of interest. The random regions are keyed by ``row["sample_id"]``.

    Raises:
        ValueError: the row has no ``sample_id`` (the random regions would not be
            reproducible), or an unknown ``source``.
    """
    roi = roi_boxes(row, predicted, source)
    if not roi:
        return None
    key = row.get("sample_id")
    if key is None or key == "":
        raise ValueError("a counterfactual needs the row's sample_id to place its random regions")
    rnd = random_boxes(roi, str(key), seed)
    return roi, rnd, inpaint(image, roi), inpaint(image, rnd)
