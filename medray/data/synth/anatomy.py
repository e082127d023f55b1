"""Drawing synthetic medical images with numpy: chest X-rays and CT/MRI axial slices.

The images are crude but have the structure that matters for learning: a chest X-ray
has dark lung fields, a bright mediastinum and spine, a heart silhouette, ribs and
diaphragm, and each finding is drawn where its box says, big and contrasted enough to
survive downscaling to 112x112 (the tiny VLM's input):

* ``effusion``: fluid filling the base of one lung up to a meniscus;
* ``consolidation``: a dense, fluffy patch inside one lung;
* ``nodule``: a small round opacity (at least ~7 px across at 112x112);
* ``pneumothorax``: a black, structureless rim of air around a collapsed lung, with a
  bright pleural line;
* ``cardiomegaly``: a heart more than half the thoracic width (normal: about 0.42).

Sides follow the radiological convention: the patient's left is on the image's right.
CT and MRI slices differ in the way the real ones do (bone bright on CT and dark on
MRI; fat dark on CT and bright on MRI; CSF dark on CT, bright on T2 MRI), so modality
is readable from pixels; lesions are ring-enhancing masses (bright rim, dark core, 22-29 px
across at 112x112) on a chosen side, unlike any normal structure of the slice (uniform
ventricles, kidneys, bowel gas), so their presence is visible at the VLM's input size.

Everything is drawn in a [0, 1] float canvas from an explicit ``numpy.random.Generator``
(deterministic for a seed) at ``min(size, 256)`` pixels and resized to ``size``.
Boxes are ``(x1, y1, x2, y2)`` fractions of the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from PIL import Image

CXR_FINDINGS = ("effusion", "consolidation", "nodule", "pneumothorax", "cardiomegaly")
WORK = 256  # drawing resolution; finer detail would not survive the target sizes

# What varies between chest X-rays, and the ranges it is drawn from (fractions of the
# image unless stated). A report states each of these in words (medray.data.synth.text).
ZONES = ("upper", "mid", "lower")
LUNG_VOLUMES = ("low", "normal", "high")
LUNG_VOLUME_DY = {"low": -0.045, "normal": 0.0, "high": 0.03}  # change of the lung half-height
HEART_WIDTH_NORMAL = (0.115, 0.13)  # heart half-width: cardiothoracic ratio ~0.40-0.45
HEART_WIDTH_ENLARGED = (0.185, 0.235)  # cardiothoracic ratio ~0.64-0.81
EFFUSION_DEPTH = (0.12, 0.22)  # height of the fluid column
CONSOLIDATION_SCALE = (0.75, 1.35)  # times a 0.17 x 0.20 ellipse
CONSOLIDATION_DY = {"upper": -0.4, "mid": -0.05, "lower": 0.3}  # centre, times lung half-height
NODULE_R = (0.038, 0.06)  # radius
NODULE_DY = (-0.55, 0.3)  # centre, times lung half-height (upper < -0.25 < mid < 0.05 < lower)
PNEUMOTHORAX_SHRINK = (0.5, 0.72)  # collapsed lung size, times the lung's
# CT / MRI lesions: ring-enhancing masses (radius, core radius / radius, rim and core values).
LESION_R = (0.10, 0.13)  # at 112x112: 22-29 px across, about one 28-px visual token
LESION_CORE = 0.55
LESION_RIM = 0.97
LESION_CORE_VALUE = 0.12


def sample_cxr_attrs(rng: np.random.Generator, findings: dict[str, str | None]) -> dict:
    """Everything a report states about a chest X-ray beyond its findings' names and sides:
    lung volumes, heart width, and each finding's size, zone, density or position.

    Draws the same number of values whatever the findings, so one study's attributes do
    not shift the random stream of the next.
    """
    a = {
        "lung_volume": LUNG_VOLUMES[int(rng.choice(3, p=(0.25, 0.5, 0.25)))],
        "heart_width": float(rng.uniform(*HEART_WIDTH_NORMAL)),
        "effusion_depth": float(rng.uniform(*EFFUSION_DEPTH)),
        "consolidation_zone": ZONES[int(rng.integers(3))],
        "consolidation_scale": float(rng.uniform(*CONSOLIDATION_SCALE)),
        "consolidation_density": "dense" if rng.random() < 0.5 else "patchy",
        "nodule_r": float(rng.uniform(*NODULE_R)),
        "nodule_dx": float(rng.uniform(0.0, 1.0)),
        "nodule_dy": float(rng.uniform(*NODULE_DY)),
        "pneumothorax_shrink": float(rng.uniform(*PNEUMOTHORAX_SHRINK)),
    }
    enlarged = float(rng.uniform(*HEART_WIDTH_ENLARGED))
    if "cardiomegaly" in findings:
        a["heart_width"] = enlarged
    return a


@dataclass
class Drawn:
    """A drawn image and what is in it."""

    pixels: np.ndarray  # uint8, H x W
    boxes: list[tuple[str, tuple[float, float, float, float]]] = field(default_factory=list)
    facts: dict = field(default_factory=dict)  # e.g. heart width ratio, sides


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    ax = (np.arange(n, dtype=np.float32) + 0.5) / n
    return np.meshgrid(ax, ax, indexing="xy")  # xx, yy


def _ellipse(xx, yy, cx, cy, ax, ay) -> np.ndarray:
    """Soft-edged inside mask of an ellipse (1 inside, 0 outside, ~2 px ramp)."""
    d = np.sqrt(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2)
    edge = 2.0 / (WORK * min(ax, ay))
    return np.clip((1.0 - d) / edge + 0.5, 0.0, 1.0)


def _smooth_noise(rng: np.random.Generator, n: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a small random grid upsampled bicubically."""
    small = (rng.random((cells, cells)) * 255).astype(np.uint8)
    big = Image.fromarray(small, "L").resize((n, n), Image.BICUBIC)
    return np.asarray(big, dtype=np.float32) / 255.0


def _finish(
    canvas: np.ndarray, rng: np.random.Generator, size: int, noise: float = 0.02
) -> np.ndarray:
    """Gamma jitter, resize to ``size``, grain; -> uint8."""
    canvas = np.clip(canvas, 0.0, 1.0) ** float(rng.uniform(0.85, 1.15))
    img = Image.fromarray((canvas * 255).astype(np.uint8), "L")
    if size != canvas.shape[0]:
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.float32)
    arr += rng.normal(0.0, noise * 255, arr.shape).astype(np.float32)
    return np.clip(arr, 0, 255).astype(np.uint8)


def _bbox(mask: np.ndarray, thresh: float = 0.5) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask > thresh)
    n = mask.shape[0]
    if len(xs) == 0:
        return (0.0, 0.0, 1.0 / n, 1.0 / n)
    return (xs.min() / n, ys.min() / n, (xs.max() + 1) / n, (ys.max() + 1) / n)


# ------------------------------------------------------------------------- chest X-ray


def draw_cxr(
    rng: np.random.Generator,
    size: int,
    findings: dict[str, str | None],
    attrs: dict | None = None,
) -> Drawn:
    """A frontal chest X-ray with ``findings`` (name -> side ``left``/``right``, or None
    for findings without a side, i.e. cardiomegaly).

    ``attrs`` fixes what the report states about the image, so that several images of
    one study match one report (see :func:`sample_cxr_attrs` for the keys and ranges;
    :mod:`medray.data.synth.text` turns them into words); unset values are drawn from
    ``rng`` within the same ranges.

    Returns the pixels, one box per finding (label = finding name) and facts such as the
    cardiothoracic ratio.
    """
    attrs = attrs or {}
    # Independent streams: anatomy, each finding, noise. Adding a finding then changes
    # nothing but that finding's pixels (the tests compare images with and without).
    seeds = rng.integers(0, 2**63, size=3)
    noise_rng = np.random.default_rng(seeds[2])
    rng = np.random.default_rng(seeds[0])  # anatomy
    n = WORK
    xx, yy = _grid(n)
    cx = 0.5 + rng.normal(0, 0.015)
    cy = 0.5 + rng.normal(0, 0.015)
    canvas = np.full((n, n), 0.06, np.float32)
    body = _ellipse(xx, yy, cx, cy + 0.04, 0.44 + rng.normal(0, 0.01), 0.52)
    canvas += body * 0.40
    # Lungs: patient's right lung on the image's left.
    lung_ax, lung_ay = 0.125 + rng.normal(0, 0.006), 0.29 + rng.normal(0, 0.01)
    lung_ay += LUNG_VOLUME_DY[attrs.get("lung_volume", "normal")]
    lungs = {}
    for side, sgn in (("right", -1.0), ("left", 1.0)):
        lx = cx + sgn * (0.165 + rng.normal(0, 0.005))
        ly = cy - 0.03
        m = _ellipse(xx, yy, lx, ly, lung_ax, lung_ay)
        m *= np.clip((ly + lung_ay * 0.85 - yy) * n / 3.0, 0, 1)  # flat-ish base (diaphragm)
        lungs[side] = (m, lx, ly)
    lung_mask = np.maximum(lungs["left"][0], lungs["right"][0])
    texture = _smooth_noise(rng, n, 24)
    canvas -= lung_mask * (0.28 + 0.06 * texture)
    # Ribs: curved bright bands over the lungs.
    phase = rng.uniform(0, 2 * np.pi)
    ribs = (np.sin(2 * np.pi * (yy * 8.5 + 1.8 * (xx - cx) ** 2) + phase) > 0.55).astype(np.float32)
    canvas += lung_mask * ribs * 0.07
    # Mediastinum and spine.
    spine = np.clip(1.0 - np.abs(xx - cx) / 0.045, 0, 1) ** 0.5 * (yy > 0.08)
    canvas = np.maximum(canvas, spine * 0.62 * body)
    # Heart: enlarged when cardiomegaly is present.
    enlarged = "cardiomegaly" in findings
    hw = rng.uniform(*(HEART_WIDTH_ENLARGED if enlarged else HEART_WIDTH_NORMAL))
    hw = attrs.get("heart_width", hw)
    hx, hy = cx + 0.045, cy + 0.12
    heart = _ellipse(xx, yy, hx, hy, hw, 0.135)
    canvas = np.maximum(canvas, heart * (0.60 + 0.03 * texture))
    thorax_w = 2 * (0.165 + lung_ax)
    facts: dict = {"ctr": round(2 * hw / thorax_w, 3), "heart_width": round(float(hw), 4)}
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []

    for name, side in findings.items():
        rng = np.random.default_rng([int(seeds[1]), CXR_FINDINGS.index(name)])
        if name == "cardiomegaly":
            boxes.append((name, _bbox(heart)))
            continue
        m, lx, ly = lungs[side or "right"]
        if name == "effusion":
            depth = rng.uniform(*EFFUSION_DEPTH)  # fraction of the image height filled
            depth = attrs.get("effusion_depth", depth)
            base = ly + lung_ay * 0.85
            level = base - depth
            lateral = np.abs(xx - lx) / lung_ax  # meniscus: higher at the chest wall
            surface = level - 0.05 * lateral**2
            fluid = m * np.clip((yy - surface) * n / 2.5, 0, 1)
            canvas = np.maximum(canvas, fluid * 0.64)
            boxes.append((name, _bbox(fluid)))
            facts["effusion_depth"] = round(depth, 3)
        elif name == "consolidation":
            zone = ZONES[int(rng.integers(len(ZONES)))]
            zone = attrs.get("consolidation_zone", zone)
            scale = attrs.get("consolidation_scale", rng.uniform(*CONSOLIDATION_SCALE))
            dense = attrs.get("consolidation_density", "dense" if rng.random() < 0.5 else "patchy")
            px = lx + rng.uniform(-0.35, 0.35) * lung_ax
            py = ly + CONSOLIDATION_DY[zone] * lung_ay
            blob = _ellipse(xx, yy, px, py, 0.085 * scale, 0.10 * scale)
            blob = blob * (0.55 + 0.45 * _smooth_noise(rng, n, 10))
            blob = np.clip((blob - 0.35) * 3.0, 0, 1) * m
            canvas = np.maximum(canvas, canvas + blob * (0.50 if dense == "dense" else 0.32))
            boxes.append((name, _bbox(blob, 0.3)))
            facts["consolidation_zone"] = zone
        elif name == "nodule":
            r = attrs.get("nodule_r", rng.uniform(*NODULE_R))
            # Lateral half of the lung on the patient's left, where the heart does not hide it.
            lo = 0.0 if side == "left" else -0.45
            dx = attrs.get("nodule_dx", rng.uniform(0.0, 1.0))
            px = lx + (lo + (0.45 - lo) * dx) * lung_ax
            py = ly + attrs.get("nodule_dy", rng.uniform(*NODULE_DY)) * lung_ay
            nod = _ellipse(xx, yy, px, py, r, r)
            canvas = np.maximum(canvas, canvas + nod * 0.55)
            boxes.append((name, (px - r * 1.2, py - r * 1.2, px + r * 1.2, py + r * 1.2)))
            facts["nodule_r"] = round(float(r), 4)
        elif name == "pneumothorax":
            shrink = attrs.get("pneumothorax_shrink", rng.uniform(*PNEUMOTHORAX_SHRINK))
            sgn = -1.0 if side == "right" else 1.0
            inner = _ellipse(
                xx,
                yy,
                lx - sgn * lung_ax * (1 - shrink) * 0.9,
                ly + lung_ay * 0.12,
                lung_ax * shrink,
                lung_ay * 0.8,
            )
            air = np.clip(m - inner, 0, 1)
            canvas = canvas * (1 - air) + air * 0.02
            rim = np.clip(
                inner
                - _ellipse(
                    xx,
                    yy,
                    lx - sgn * lung_ax * (1 - shrink) * 0.9,
                    ly + lung_ay * 0.12,
                    lung_ax * shrink * 0.93,
                    lung_ay * 0.77,
                ),
                0,
                1,
            )
            canvas += rim * m * 0.30
            boxes.append((name, _bbox(air)))
            facts["pneumothorax_shrink"] = round(float(shrink), 3)
    canvas += (_smooth_noise(noise_rng, n, 48) - 0.5) * 0.05
    return Drawn(_finish(canvas, noise_rng, size), boxes, facts)


# ------------------------------------------------------------------------ CT / MRI slices

# (bone, fat, soft tissue, fluid/CSF, air) intensities per modality.
_TISSUE = {
    "ct": {"bone": 0.95, "fat": 0.22, "soft": 0.50, "fluid": 0.30, "air": 0.0, "organ": 0.60},
    "mri": {"bone": 0.10, "fat": 0.88, "soft": 0.45, "fluid": 0.92, "air": 0.0, "organ": 0.35},
}


def draw_slice(
    rng: np.random.Generator,
    size: int,
    modality: str,
    region: str,
    lesions: list[str],
) -> Drawn:
    """An axial CT or MRI slice of the ``head``, ``chest`` or ``abdomen`` with one lesion per
    entry of ``lesions`` (each ``left`` or ``right``, the patient's side).

    Boxes: organs (``Brain``, ``Lung``, ``Liver``, ``Kidney``, ``Heart``, ``Spine``) and
    each lesion (``Lesion``).
    """
    t = _TISSUE[modality]
    n = WORK
    xx, yy = _grid(n)
    cx, cy = 0.5 + rng.normal(0, 0.01), 0.5 + rng.normal(0, 0.01)
    canvas = np.full((n, n), t["air"], np.float32)
    boxes: list[tuple[str, tuple[float, float, float, float]]] = []
    tex = _smooth_noise(rng, n, 20)
    organ_mask = None
    if region == "head":
        ax, ay = 0.36 + rng.normal(0, 0.01), 0.43 + rng.normal(0, 0.01)
        scalp = _ellipse(xx, yy, cx, cy, ax + 0.035, ay + 0.035)
        skull = _ellipse(xx, yy, cx, cy, ax, ay)
        brain = _ellipse(xx, yy, cx, cy, ax - 0.035, ay - 0.035)
        canvas = scalp * t["fat"]
        canvas = canvas * (1 - skull) + skull * t["bone"]
        canvas = canvas * (1 - brain) + brain * (t["soft"] + 0.05 * tex)
        for sgn in (-1, 1):  # lateral ventricles
            v = _ellipse(xx, yy, cx + sgn * 0.05, cy - 0.02, 0.03, 0.11)
            canvas = canvas * (1 - v) + v * t["fluid"]
        boxes.append(("Brain", _bbox(brain)))
        organ_mask = brain
    else:
        ax, ay = (0.44, 0.33) if region == "abdomen" else (0.45, 0.34)
        body = _ellipse(xx, yy, cx, cy, ax, ay)
        inner = _ellipse(xx, yy, cx, cy, ax - 0.045, ay - 0.04)
        canvas = body * t["fat"]
        canvas = canvas * (1 - inner) + inner * (t["soft"] + 0.04 * tex)
        spine = _ellipse(xx, yy, cx, cy + ay - 0.12, 0.06, 0.055)
        canvas = canvas * (1 - spine) + spine * t["bone"]
        boxes.append(("Spine", _bbox(spine)))
        if region == "abdomen":
            liver = _ellipse(xx, yy, cx - 0.17, cy - 0.06, 0.2, 0.17) * inner
            canvas = canvas * (1 - liver) + liver * t["organ"]
            boxes.append(("Liver", _bbox(liver)))
            for sgn in (-1, 1):
                k = _ellipse(xx, yy, cx + sgn * 0.16, cy + 0.12, 0.055, 0.08)
                canvas = canvas * (1 - k) + k * (t["organ"] + 0.05)
                boxes.append(("Kidney", _bbox(k)))
            for _ in range(3):  # bowel gas
                g = _ellipse(
                    xx, yy, cx + rng.uniform(0.0, 0.25), cy + rng.uniform(-0.15, 0.05), 0.03, 0.025
                )
                canvas = canvas * (1 - g) + g * t["air"]
            organ_mask = liver
        else:  # chest
            lungs = []
            for sgn in (-1, 1):
                lung = _ellipse(xx, yy, cx + sgn * 0.2, cy - 0.02, 0.17, 0.23) * inner
                canvas = canvas * (1 - lung) + lung * 0.03
                boxes.append(("Lung", _bbox(lung)))
                lungs.append(lung)
            heart = _ellipse(xx, yy, cx + 0.04, cy + 0.02, 0.12, 0.11)
            canvas = canvas * (1 - heart) + heart * t["organ"]
            boxes.append(("Heart", _bbox(heart)))
            organ_mask = np.maximum(lungs[0], lungs[1])
    for side in lesions:
        sgn = 1.0 if side == "left" else -1.0  # patient's left = image right
        r = rng.uniform(*LESION_R)
        if region == "abdomen":
            px, py = (
                (cx - 0.17 + rng.uniform(-0.06, 0.04), cy - 0.08)
                if side == "right"
                else (cx + 0.18, cy - 0.05)
            )
        else:
            px, py = cx + sgn * rng.uniform(0.14, 0.2), cy + rng.uniform(-0.15, 0.12)
        ry = r * rng.uniform(0.85, 1.1)
        # A ring-enhancing mass (bright rim, dark necrotic core) in both modalities: unlike
        # the ventricles, bowel gas or kidneys, which are uniform, so a lesion is told apart
        # from normal anatomy by its look and not only by its size.
        les = _ellipse(xx, yy, px, py, r, ry)
        core = _ellipse(xx, yy, px, py, r * LESION_CORE, ry * LESION_CORE)
        canvas = canvas * (1 - les) + les * LESION_RIM
        canvas = canvas * (1 - core) + core * LESION_CORE_VALUE
        boxes.append(("Lesion", (px - r, py - ry, px + r, py + ry)))
    canvas += (_smooth_noise(rng, n, 40) - 0.5) * 0.04
    del organ_mask
    return Drawn(
        _finish(canvas, rng, size, noise=0.015), boxes, {"modality": modality, "region": region}
    )
