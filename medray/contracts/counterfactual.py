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
  Each choice has a *kind* (:data:`KINDS`, :func:`roi_region`), so flip rates can be
  reported per kind: a lesion the question names, an organ it names, the only box on the
  image, the model's own boxes.
* Control regions (:func:`random_boxes`): boxes of the same sizes at random places inside
  the body (:func:`body_box`, the bounding box of the image's foreground: a region of
  black background removes nothing, so it would make any ROI look faithful) that overlap
  the ROI least (anywhere on the image only when the body leaves no room beside the ROI),
  drawn from a generator keyed by the row's ``sample_id`` and ``seed`` (never by its
  position in a batch).
* Inpainting (:func:`inpaint`): every box is filled with the mean colour of a ring around
  it, then blurred, so the structure is gone without a sharp artificial edge.

Boxes are ``(x1, y1, x2, y2)`` normalised to ``[0, 1]``.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, ImageFilter

__all__ = [
    "KINDS",
    "SOURCES",
    "Box",
    "Counterfactual",
    "body_box",
    "counterfactual_images",
    "inpaint",
    "random_boxes",
    "roi_boxes",
    "roi_region",
]

Box = tuple[float, float, float, float]

# reference: named reference boxes only; predicted: the answer's boxes only;
# both: reference, else predicted; predicted_first: predicted, else reference.
SOURCES = ("reference", "predicted", "both", "predicted_first")
RING = 0.25  # share of the box size used as the ring of background pixels
# What the region of interest is: a named reference box with a lesion (any label that is
# not purely an organ: "Lesion", "Brain Tumor"), a named organ box, the only reference
# box (named or not), the model's predicted boxes, or bare reference coordinates.
KINDS = ("named lesion", "named organ", "only box", "predicted", "reference")
# Words of organ labels (SLAKE's detection labels, the synthetic sets' organ boxes).
ORGAN_WORDS = frozenset({
    "brain", "lung", "liver", "kidney", "heart", "spine", "spinal", "cord", "spleen",
    "pancreas", "stomach", "bladder", "colon", "rectum", "bowel", "small", "large",
    "intestine", "duodenum", "esophagu", "oesophagu", "trachea", "gallbladder", "eye",
    "prostate", "uterus", "aorta", "breast", "bone", "rib", "femur", "skull", "left", "right",
})  # fmt: skip
# Foreground: pixels brighter than this share of the image's 99th percentile (and > 8/255).
BODY_THRESHOLD = 0.08


def _words(text: Any) -> set[str]:
    return {w.rstrip("s") for w in re.findall(r"[a-z]+", str(text or "").lower()) if len(w) > 2}


def _clip(b: Sequence[float]) -> Box:
    x1, y1, x2, y2 = (min(1.0, max(0.0, float(v))) for v in b)
    return (x1, y1, x2, y2)


def _is_organ(label: Any) -> bool:
    words = _words(label)
    return bool(words) and words <= ORGAN_WORDS


def _reference(row: Mapping[str, Any]) -> tuple[list[Box], str]:
    ref = [b for b in (row.get("boxes") or []) if b is not None]
    if ref and not all(isinstance(b, Mapping) for b in ref):  # bare [x1, y1, x2, y2] lists
        return [_clip(b) for b in ref if len(b) == 4][:1], "reference"
    named = _words(row.get("question")) | _words(row.get("answer"))
    for label in row.get("labels") or []:
        named |= _words(label)
    chosen = [b for b in ref if _words(b.get("label")) & named]
    if len(ref) == 1 and (not chosen or chosen == ref):
        chosen, kind = ref, "only box"
    elif chosen and all(_is_organ(b.get("label")) for b in chosen):
        kind = "named organ"
    else:
        kind = "named lesion"
    return [_clip((b["x1"], b["y1"], b["x2"], b["y2"])) for b in chosen], kind


def roi_region(
    row: Mapping[str, Any], predicted: Sequence[Sequence[float]] = (), source: str = "both"
) -> tuple[list[Box], str | None]:
    """``(boxes, kind)``: the boxes whose content the answer should depend on (see the
    module docstring) and their kind (one of :data:`KINDS`; None without boxes).

    Args:
        row: the input row (``boxes``, ``question``, ``answer``, ``labels``).
        predicted: the model's boxes ``[[x1, y1, x2, y2], ...]`` from its main answer.
        source: one of :data:`SOURCES`.

    Raises:
        ValueError: an unknown ``source``.
    """
    if source not in SOURCES:
        raise ValueError(f"counterfactual source must be one of {SOURCES}, got {source!r}")
    pred = ([_clip(b) for b in predicted if b is not None and len(b) == 4], "predicted")
    ref = _reference(row)
    order = {
        "reference": [ref],
        "predicted": [pred],
        "both": [ref, pred],
        "predicted_first": [pred, ref],
    }[source]
    for boxes, kind in order:
        boxes = [b for b in boxes if b[2] - b[0] > 0 and b[3] - b[1] > 0]
        if boxes:
            return boxes, kind
    return [], None


def roi_boxes(
    row: Mapping[str, Any], predicted: Sequence[Sequence[float]] = (), source: str = "both"
) -> list[Box]:
    """The boxes of :func:`roi_region`, without their kind."""
    return roi_region(row, predicted, source)[0]


def body_box(image: Image.Image) -> Box:
    """The bounding box of the image's foreground (the body), normalised; the whole image
    when nothing stands out from the background.

    Foreground: on a 64-pixel-wide grey copy, pixels above :data:`BODY_THRESHOLD` of the
    99th percentile; the box spans the rows and columns where at least 5% of the pixels
    are foreground.
    """
    grey = image.convert("L")
    w, h = grey.size
    small = np.asarray(grey.resize((64, max(1, round(64 * h / max(w, 1))))), dtype=np.float32)
    cut = max(8.0, BODY_THRESHOLD * float(np.percentile(small, 99)))
    fg = small > cut
    rows = np.flatnonzero(fg.mean(axis=1) >= 0.05)
    cols = np.flatnonzero(fg.mean(axis=0) >= 0.05)
    if not rows.size or not cols.size:
        return (0.0, 0.0, 1.0, 1.0)
    ny, nx = fg.shape
    return (cols[0] / nx, rows[0] / ny, (cols[-1] + 1) / nx, (rows[-1] + 1) / ny)


def _iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def random_boxes(
    boxes: Sequence[Box],
    key: str,
    seed: int = 0,
    tries: int = 32,
    within: Box = (0.0, 0.0, 1.0, 1.0),
) -> list[Box]:
    """Boxes of the same sizes as ``boxes`` at random places, overlapping them as little as
    possible: the first of ``tries`` positions inside ``within`` (the body,
    :func:`body_box`) with no overlap; failing that (a body hardly larger than the
    region), the first of ``tries`` more anywhere on the image; else the least
    overlapping position seen, the body's first on a tie.

    Deterministic: the positions depend only on ``key`` (the sample id), ``seed`` and
    ``within``.
    """
    digest = hashlib.sha256(f"{seed}\x1f{key}".encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    out: list[Box] = []
    for x1, y1, x2, y2 in boxes:
        w, h = x2 - x1, y2 - y1
        best, best_overlap = (x1, y1, x2, y2), 2.0
        for area in (within, (0.0, 0.0, 1.0, 1.0)):
            ax1, ay1, ax2, ay2 = area
            lo_x, hi_x = (ax1, ax2 - w) if w <= ax2 - ax1 else (0.0, 1.0 - w)
            lo_y, hi_y = (ay1, ay2 - h) if h <= ay2 - ay1 else (0.0, 1.0 - h)
            for _ in range(tries):
                nx, ny = rng.uniform(lo_x, hi_x), rng.uniform(lo_y, hi_y)
                cand = (nx, ny, nx + w, ny + h)
                overlap = max((_iou(cand, b) for b in boxes), default=0.0)
                if overlap < best_overlap:
                    best, best_overlap = cand, overlap
                if overlap == 0.0:
                    break
            if best_overlap == 0.0:
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


class Counterfactual(NamedTuple):
    """One row's counterfactual: the regions, the two inpainted images, the ROI's kind."""

    roi: list[Box]
    random: list[Box]
    roi_image: Image.Image
    random_image: Image.Image
    kind: str


def counterfactual_images(
    image: Image.Image,
    row: Mapping[str, Any],
    predicted: Sequence[Sequence[float]] = (),
    *,
    source: str = "both",
    seed: int = 0,
) -> Counterfactual | None:
    """The counterfactual of one answered row, or None when the row has no region of
    interest. The random regions lie in the image's body and are keyed by
    ``row["sample_id"]``.

    Raises:
        ValueError: the row has no ``sample_id`` (the random regions would not be
            reproducible), or an unknown ``source``.
    """
    roi, kind = roi_region(row, predicted, source)
    if not roi or kind is None:
        return None
    key = row.get("sample_id")
    if key is None or key == "":
        raise ValueError("a counterfactual needs the row's sample_id to place its random regions")
    rnd = random_boxes(roi, str(key), seed, within=body_box(image))
    return Counterfactual(roi, rnd, inpaint(image, roi), inpaint(image, rnd), kind)
