"""Synthetic medical datasets in the real on-disk layouts, at any size, from a seed.

    generate("mimic-cxr", "/data/synth-mimic", n=1000, seed=0)

writes MIMIC-CXR-JPG (``files/pXX/pXXXXXXXX/sXXXXXXXX/*.jpg``, metadata / split /
CheXpert CSVs, reports, MS-CXR-style boxes), SLAKE (``{train,validate,test}.json``,
``imgs/xmlabN/source.jpg`` + ``detection.json``), VQA-RAD (MEVF ``trainset.json`` /
``testset.json`` + ``images/``, or the OSF ``VQA_RAD Dataset Public.json`` layout) or
MedMCQA (JSON lines). The readers in :mod:`medray.data.readers` read them exactly like
the real datasets. Images are drawn by :mod:`medray.data.synth.anatomy`; text by
:mod:`medray.data.synth.text`; the layouts by :mod:`medray.data.synth.layouts` (MIMIC-CXR: :mod:`medray.data.synth.mimic`).

The output appears atomically (written to a temporary sibling, then renamed) with a
``_medray_synth.json`` marker recording how it was made.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from medray.data.synth import layouts, mimic

log = logging.getLogger(__name__)

KINDS = ("mimic-cxr", "slake", "vqa-rad", "medmcqa")
MARKER = "_medray_synth.json"
GENERATOR_VERSION = 5  # 2: reports state sizes, zones, lung volumes; varied phrasing
# 3: CT/MRI lesions are ring-enhancing masses (were uniform blobs like the ventricles)
# 4: lesions 22-29 px across at 112x112 (were 15-20): a linear probe on the untrained
#    tiny-qwen2-vl-base tower's 16 visual tokens reads presence at 0.96 (was 0.81)
# 5: SLAKE draws X-ray, CT and MRI equally often and its closed modality question asks about
#    any other modality: P(Yes) = 0.5 per wording (v4's "Is this a X-Ray image?" was always Yes)


class SynthError(ValueError):
    """Synthetic data cannot be generated as asked; the message says why."""


def _render_chunk(jobs: list[layouts.ImageJob], out: str) -> dict[str, list]:
    boxes = {}
    for job in jobs:
        data, bxs = layouts.render(job)
        path = Path(out) / job.rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        boxes[job.rel] = bxs
    return boxes


def _render_all(jobs: list[layouts.ImageJob], out: str, workers: int) -> dict[str, list]:
    if workers <= 1 or len(jobs) < 64:
        return _render_chunk(jobs, out)
    chunks = [jobs[i : i + 256] for i in range(0, len(jobs), 256)]
    boxes: dict[str, list] = {}
    # spawn, not fork: the caller may hold Ray or other threads.
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn")) as pool:
        for part in pool.map(_render_chunk, chunks, [out] * len(chunks)):
            boxes.update(part)
    return boxes


def params(
    kind: str, n: int, seed: int, image_size: int | None = None, layout: str = "mevf"
) -> dict[str, Any]:
    """The parameters that decide a synthetic dataset's bytes (recorded in its marker)."""
    if kind not in KINDS:
        raise SynthError(f"unknown kind {kind!r}; choose one of {list(KINDS)}")
    if n < 1:
        raise SynthError(f"n must be at least 1, got {n}")
    if layout not in ("mevf", "osf"):
        raise SynthError(f"layout must be 'mevf' or 'osf', got {layout!r}")
    size = image_size or layouts.DEFAULT_SIZE.get(kind)
    if size is not None and not 32 <= size <= 4096:
        raise SynthError(f"image size must be between 32 and 4096, got {size}")
    return {
        "kind": kind,
        "n": n,
        "seed": seed,
        "image_size": size if kind != "medmcqa" else None,
        "layout": layout if kind == "vqa-rad" else None,
        "version": GENERATOR_VERSION,
    }


def generate(
    kind: str,
    out: str | Path,
    n: int,
    seed: int = 0,
    image_size: int | None = None,
    layout: str = "mevf",
    workers: int = 1,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write ``n`` synthetic samples of ``kind`` to ``out`` (images for image datasets,
    questions for MedMCQA); return a summary of what was written.

    Raises:
        SynthError: bad arguments, or ``out`` exists and ``overwrite`` is off.
    """
    p = params(kind, n, seed, image_size, layout)
    target = Path(out).expanduser().resolve()
    if target.exists() and not overwrite:
        raise SynthError(
            f"{target} already exists; pass overwrite (--overwrite) or pick another folder"
        )
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True)
    try:
        size = p["image_size"]
        if kind == "medmcqa":
            files, n_images = layouts.medmcqa_files(n, seed), 0
        else:
            if kind == "vqa-rad":
                plan = layouts.plan_vqa_rad(n, seed, size, layout)
            elif kind == "mimic-cxr":
                plan = mimic.plan_mimic(n, seed, size)
            else:
                plan = layouts.plan_slake(n, seed, size)
            boxes = _render_all(plan.jobs, str(tmp), workers)
            n_images = len(plan.jobs)
            if kind == "mimic-cxr":
                files = mimic.mimic_files(plan, boxes, size)
            elif kind == "slake":
                files = layouts.slake_files(plan, boxes, size)
            else:
                files = layouts.vqa_rad_files(plan, layout)
        for rel, data in files.items():
            path = tmp / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        (tmp / MARKER).write_text(json.dumps(p, indent=2))
        if target.exists():
            shutil.rmtree(target)
        os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("wrote synthetic %s (n=%d, seed=%d) to %s", kind, n, seed, target)
    return {**p, "out": str(target), "images": n_images, "files": len(files) + n_images}


def read_marker(folder: str | Path) -> dict[str, Any] | None:
    path = Path(folder) / MARKER
    return json.loads(path.read_text()) if path.is_file() else None


def ensure_synthetic(
    kind: str,
    out: str | Path,
    n: int,
    seed: int = 0,
    image_size: int | None = None,
    workers: int = 1,
) -> bool:
    """Generate synthetic ``kind`` data at ``out`` unless it is already there; True if generated.

    An existing folder generated with the same parameters is reused; one generated with
    other parameters is regenerated; a folder without a marker (real data) is never
    touched.
    """
    target = Path(out)
    want = params(kind, n, seed, image_size)
    if target.exists():
        have = read_marker(target)
        if have is None:
            log.info("%s exists and is not synthetic data; using it as it is", target)
            return False
        if have == want:
            return False
        log.info("regenerating %s: it was made with %s, the config asks for %s", target, have, want)
    try:
        generate(kind, target, n, seed, image_size, workers=workers, overwrite=True)
    except FileExistsError:  # another process generated it at the same moment
        return False
    return True


__all__ = ["KINDS", "SynthError", "ensure_synthetic", "generate", "read_marker"]
