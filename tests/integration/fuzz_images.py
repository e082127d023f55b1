"""Hypothesis strategy for the API's image fields (the OpenAPI format ``medray-image``).

Random base64 is never an image, so requests generated from the schema alone all stop at
the image check. This draws what a client really sends (PNG and JPEG in every mode
Pillow writes, 16-bit DICOM; sizes from 1 px to a few hundred, extreme aspect ratios) and,
about one time in five, what a hostile or broken client sends (random bytes, a truncated
PNG, a GIF, BMP or TIFF, a decompression bomb, a compressed DICOM no decoder reads, an
image too small to see), as raw base64 or a base64 ``data:`` URL.
"""

from __future__ import annotations

import base64
import io
from functools import cache

import numpy as np
from hypothesis import strategies as st
from PIL import Image

PNG_MODES = ("1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I")
JPEG_MODES = ("L", "RGB", "CMYK")


def _encode(mode: str, fmt: str, w: int, h: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    if mode == "I;16":
        img = Image.fromarray(rng.integers(0, 65536, (h, w), dtype=np.uint16))
    elif mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


@cache
def _hostile() -> tuple[bytes, ...]:
    """Fixed bad payloads, built once: each must be a 4xx naming the problem."""
    from dicom_fixtures import make_dicom

    png = _encode("RGB", "PNG", 64, 64, 0)
    bomb = io.BytesIO()
    Image.new("1", (6000, 6000)).save(bomb, "PNG")  # 36 M pixels in a few kB: a 413
    others = []
    for fmt in ("GIF", "BMP", "TIFF"):  # not accepted: 415
        buf = io.BytesIO()
        Image.new("RGB", (32, 32)).save(buf, fmt)
        others.append(buf.getvalue())
    pixels = np.arange(48 * 40, dtype=np.uint16).reshape(48, 40)
    return (
        png[: len(png) // 2],  # truncated: 422
        png[:8] + b"\x00" * 40,  # a PNG signature and nothing else: 422
        bomb.getvalue(),
        *others,
        make_dicom(pixels, compressed=True),  # a compression no decoder reads: 415
        _encode("RGB", "PNG", 8, 8, 1),  # both sides under 16 px: 422 image_too_small
        b"%!PS-Adobe-3.0 EPSF-3.0\n",  # EPS (would run Ghostscript): 415
    )


@st.composite
def _valid(draw) -> bytes:
    side = st.integers(16, 96) | st.integers(97, 320) | st.integers(1, 15)
    w, h = draw(side), draw(side)
    if draw(st.integers(0, 9)) == 0:  # extreme aspect ratio (1 x 300 and the like)
        w, h = draw(st.sampled_from([(1, 300), (300, 1), (2, 320), (320, 3), (16, 320)]))
    fmt = draw(st.sampled_from(["PNG", "JPEG", "DICOM"]))
    seed = draw(st.integers(0, 2**16))
    if fmt == "DICOM":
        from dicom_fixtures import make_dicom

        rng = np.random.default_rng(seed)
        return make_dicom(rng.integers(0, 4096, (max(h, 16), max(w, 16)), dtype=np.uint16))
    mode = draw(st.sampled_from(PNG_MODES if fmt == "PNG" else JPEG_MODES))
    return _encode(mode, fmt, w, h, seed)


def _wrap(data: bytes, data_url: bool) -> str:
    text = base64.b64encode(data).decode("ascii")
    return f"data:image/png;base64,{text}" if data_url else text


def image_payloads() -> st.SearchStrategy[str]:
    """Base64 images as the API receives them: mostly real ones, some hostile ones."""
    hostile = st.sampled_from(_hostile()) | st.binary(min_size=1, max_size=64)
    raw = st.one_of(*[_valid()] * 4, hostile)  # about one in five is bad
    return st.builds(_wrap, raw, st.booleans())
