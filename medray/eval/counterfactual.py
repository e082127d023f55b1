"""Counterfactual images: a region inpainted, and a random region of the same size.

Faithfulness asks whether an answer depends on the region the model points at: the image
is re-answered once with that region inpainted and once with a random region of the same
size inpainted (:mod:`medray.eval.faithfulness` scores the flips). Both the GRPO reward
(:func:`medray.train.rewards.counterfactual_rewards`) and the evaluation build their
counterfactual images here, so they measure the same thing.

Inpainting fills the box with the mean colour of a ring of pixels around it (the local
background), so the region's content is gone without introducing a black square that a
model could learn to detect. Boxes are ``(x1, y1, x2, y2)`` normalised to ``[0, 1]``.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
from PIL import Image

Box = tuple[float, float, float, float]

# Share of the box size used as the ring of background pixels around it.
RING = 0.25


def _pixels(box: Sequence[float], width: int, height: int) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (float(v) for v in box)
    if not (0.0 <= x1 <= x2 <= 1.0 and 0.0 <= y1 <= y2 <= 1.0):
        raise ValueError(f"box {tuple(box)} is not (x1, y1, x2, y2) inside [0, 1]")
    px1, py1 = int(np.floor(x1 * width)), int(np.floor(y1 * height))
    px2, py2 = int(np.ceil(x2 * width)), int(np.ceil(y2 * height))
    # At least one pixel, so a degenerate box still changes something.
    return px1, py1, max(px2, min(px1 + 1, width)), max(py2, min(py1 + 1, height))


def inpaint(image: Image.Image, box: Sequence[float]) -> Image.Image:
    """A copy of ``image`` with ``box`` filled by the mean colour of the ring around it.

    Raises:
        ValueError: the box is not normalised ``(x1, y1, x2, y2)``.
    """
    arr = np.asarray(image.convert("RGB"), dtype=np.float32).copy()
    h, w = arr.shape[:2]
    x1, y1, x2, y2 = _pixels(box, w, h)
    rx, ry = max(1, int((x2 - x1) * RING)), max(1, int((y2 - y1) * RING))
    ox1, oy1, ox2, oy2 = max(0, x1 - rx), max(0, y1 - ry), min(w, x2 + rx), min(h, y2 + ry)
    ring = np.ones((oy2 - oy1, ox2 - ox1), dtype=bool)
    ring[y1 - oy1 : y2 - oy1, x1 - ox1 : x2 - ox1] = False
    outer = arr[oy1:oy2, ox1:ox2][ring]
    # A box covering the whole image has no ring: fall back to the image mean.
    fill = outer.mean(axis=0) if outer.size else arr.reshape(-1, 3).mean(axis=0)
    arr[y1:y2, x1:x2] = fill
    return Image.fromarray(arr.round().clip(0, 255).astype(np.uint8), "RGB")


def _overlap(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return ix * iy


def random_box(box: Sequence[float], rng: random.Random, tries: int = 20) -> Box:
    """A box of the same size as ``box`` at a random place inside ``[0, 1]``.

    Places that overlap ``box`` least are preferred (the first of ``tries`` random places
    that does not overlap it at all, else the one overlapping least), so the control
    region is a different region whenever the image has room for one.
    """
    x1, y1, x2, y2 = (float(v) for v in box)
    bw, bh = x2 - x1, y2 - y1
    best: tuple[float, Box] | None = None
    for _ in range(tries):
        nx, ny = rng.uniform(0.0, 1.0 - bw), rng.uniform(0.0, 1.0 - bh)
        cand = (nx, ny, nx + bw, ny + bh)
        ov = _overlap(cand, (x1, y1, x2, y2))
        if best is None or ov < best[0]:
            best = (ov, cand)
        if ov == 0.0:
            break
    assert best is not None
    return best[1]
