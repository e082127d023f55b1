"""Request images: format allow-list, decompression bombs, extreme shapes, unusual modes."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from medray.serving.images import ImageError, http_status, open_image

pytestmark = pytest.mark.unit


def _encode(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt)
    return buf.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


def test_png_and_jpeg_are_accepted():
    for fmt in ("PNG", "JPEG"):
        img = open_image(_encode(Image.new("RGB", (64, 48), "gray"), fmt), max_pixels=10**6)
        assert img.size == (64, 48) and img.mode == "RGB"


@pytest.mark.parametrize(
    "fmt,named", [("GIF", "GIF"), ("BMP", "BMP"), ("TIFF", "TIFF"), ("WEBP", "WebP")]
)
def test_other_pillow_formats_are_refused_by_name(fmt, named):
    data = _encode(Image.new("RGB", (32, 32), "gray"), fmt)
    with pytest.raises(
        ImageError, match=f"a {named}.*accepted image formats: PNG, JPEG, DICOM"
    ) as e:
        open_image(data, max_pixels=10**6)
    assert e.value.code == "unsupported_image_format" and http_status(e.value) == 415


def test_eps_never_reaches_pillow(monkeypatch):
    """EPS makes Pillow run Ghostscript: it is refused from its magic bytes, and Pillow's
    open is never called for it."""
    calls = []
    monkeypatch.setattr(Image, "open", lambda *a, **k: calls.append(a))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"
    with pytest.raises(ImageError, match="PostScript/EPS") as e:
        open_image(eps, max_pixels=10**6)
    assert e.value.code == "unsupported_image_format" and calls == []


def test_bytes_of_no_known_format_are_not_an_image():
    with pytest.raises(ImageError, match="not an image; accepted image formats") as e:
        open_image(b"hello, I am text", max_pixels=10**6)
    assert e.value.code == "invalid_image" and http_status(e.value) == 422


@pytest.mark.parametrize("side", [10_000, 100_000])  # Pillow's warning, then its error
def test_decompression_bombs_are_a_4xx_naming_the_problem(side):
    data = _png_header_only(side, side)
    with pytest.raises(ImageError, match="decompression bomb") as e:
        open_image(data, max_pixels=10**12)  # Pillow's own limit is what refuses it
    if side == 10_000:  # the warning's range: the message names the size
        assert "10000x10000" in str(e.value)
    assert e.value.code == "image_too_large" and http_status(e.value) == 413


def test_pixel_limit_is_checked_from_the_header():
    with pytest.raises(ImageError, match="over the limit of 1000000") as e:
        open_image(_png_header_only(2000, 1000), max_pixels=1_000_000)
    assert e.value.code == "image_too_large"


def test_extreme_aspect_ratio_is_padded_to_a_square_as_training_does():
    from medray.data.config import ImageSettings
    from medray.data.images import prepare_image

    strip = Image.new("RGB", (1, 300), (200, 100, 50))
    data = _encode(strip)
    img = open_image(data, max_pixels=10**6)
    assert img.size == (300, 300) and img.mode == "RGB"
    a = np.asarray(img)
    assert tuple(a[150, 149]) == (200, 100, 50) and tuple(a[150, 0]) == (0, 0, 0)  # centred
    # Exactly preprocessing's pad transform (the one image transform).
    ref = prepare_image(data, ImageSettings(size=300, resize="pad", format="png"))
    assert np.array_equal(a, np.asarray(Image.open(io.BytesIO(ref.data)).convert("RGB")))


def test_a_thin_side_is_padded_and_a_tiny_image_refused():
    assert open_image(_encode(Image.new("L", (10, 100), 255)), max_pixels=10**6).size == (
        100,
        100,
    )
    with pytest.raises(ImageError, match="5x5 pixels; its larger side must be at least 16") as e:
        open_image(_encode(Image.new("RGB", (5, 5))), max_pixels=10**6)
    assert e.value.code == "image_too_small" and http_status(e.value) == 422


def test_huge_images_are_fitted_to_max_side():
    img = open_image(_encode(Image.new("RGB", (2000, 1000), "gray")), 4_000_000, max_side=512)
    assert img.size == (512, 256) and img.mode == "RGB"


def test_sixteen_bit_grayscale_is_scaled_to_8_bit_like_training():
    ramp = (np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 16).astype(np.uint16)
    img16 = Image.fromarray(ramp)
    assert img16.mode.startswith("I;16")
    img = open_image(_encode(img16), max_pixels=10**6)
    a = np.asarray(img)
    assert img.mode == "RGB" and img.size == (64, 64)
    assert a.min() == 0 and a.max() == 255  # the full 16-bit range, scaled, not clipped


@pytest.mark.parametrize("mode", ["RGBA", "P", "LA", "1", "CMYK"])
def test_unusual_modes_become_rgb(mode):
    img = Image.new("RGB", (40, 30), (120, 60, 30)).convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    out = open_image(_encode(img, fmt), max_pixels=10**6)
    assert out.mode == "RGB" and out.size == (40, 30)


def test_truncated_and_non_images_are_explained():
    data = _encode(Image.new("RGB", (64, 64), "gray"))
    with pytest.raises(ImageError, match="truncated or corrupt") as e:
        open_image(data[: len(data) // 2], max_pixels=10**6)
    assert e.value.code == "invalid_image"
    with pytest.raises(ImageError, match="not an image"):
        open_image(b"plain text", max_pixels=10**6)
    with pytest.raises(ImageError, match="empty"):
        open_image(b"", max_pixels=10**6)
