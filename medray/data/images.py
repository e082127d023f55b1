"""Image decoding, checking, resizing and encoding for preprocessing (pure functions).

:func:`prepare_image` turns the bytes of one image file into the stored image: checked
against the size limits before any pixel is decoded, decoded (JPEG at a reduced DCT
scale when the target is much smaller, which is several times faster), converted to
8-bit grayscale or RGB, resized to the target size and encoded. DICOM files are first
converted by :func:`medray.data.dicom.dicom_to_png` (windowed 8-bit grayscale). Failures raise
:class:`ImageRejected` with the reason that goes to the quarantine.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from medray.data.config import ImageSettings
from medray.data.dicom import DicomError, dicom_to_png, is_dicom


class ImageRejected(ValueError):
    """An image cannot be used; ``str(e)`` is the quarantine reason."""


@dataclass(frozen=True)
class PreparedImage:
    data: bytes
    format: str
    width: int
    height: int
    source_width: int
    source_height: int
    # Where the source image landed in the stored one, as fractions of the stored image:
    # x_out = offset_x + x_in * scale_x (x_in a fraction of the source width).
    offset_x: float
    offset_y: float
    scale_x: float
    scale_y: float


def _to_8bit(img: Image.Image, color: str) -> Image.Image:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit / float: scale to 0..255
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.astype(np.uint8), "L")
        mode = "L"
    target = color
    if color == "auto":
        target = "L" if mode in ("L", "LA", "1") else "RGB"
    if img.mode in ("RGBA", "LA", "P", "PA") and target == "RGB":
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(bg, img)
    return img.convert(target) if img.mode != target else img


def prepare_image(data: bytes, settings: ImageSettings) -> PreparedImage:
    """Check, decode, resize and encode one image file's bytes.

    Raises:
        ImageRejected: empty or oversized file, unidentifiable or truncated image,
            too many pixels, or a decoder error.
    """
    if not data:
        raise ImageRejected("image file is empty")
    if len(data) > settings.max_file_bytes:
        raise ImageRejected(
            f"image file {len(data)} bytes exceeds max_file_bytes {settings.max_file_bytes}"
        )
    if is_dicom(data):  # the one DICOM conversion (rescale, window, MONOCHROME1), as serving
        try:
            data = dicom_to_png(data, settings.max_pixels)
        except DicomError as e:
            raise ImageRejected(f"DICOM: {e}") from None
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below replaces PIL's warning; PIL still refuses
            # (DecompressionBombError) above twice Image.MAX_IMAGE_PIXELS.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageRejected(
            "image unreadable: not a recognised image format (corrupt header?)"
        ) from None
    except Image.DecompressionBombError as e:
        raise ImageRejected(f"image exceeds max_pixels: {e}") from None
    except Exception as e:  # PIL raises many types on broken headers
        raise ImageRejected(f"image unreadable: {type(e).__name__}: {e}") from None
    sw, sh = img.size
    if sw * sh > settings.max_pixels:
        raise ImageRejected(f"image {sw}x{sh} exceeds max_pixels {settings.max_pixels}")
    if sw < 1 or sh < 1:
        raise ImageRejected(f"image has no pixels ({sw}x{sh})")
    size = settings.size
    try:
        if img.format == "JPEG":
            # Decode at the smallest DCT scale that still covers the target (fast path).
            draft_mode = "L" if settings.color == "L" else img.mode
            img.draft(draft_mode, (size, size))
        img.load()
    except OSError as e:
        msg = str(e)
        if "truncated" in msg:
            raise ImageRejected(f"image truncated: {msg}") from None
        raise ImageRejected(f"image corrupt: {msg}") from None
    except Exception as e:
        raise ImageRejected(f"image corrupt: {type(e).__name__}: {e}") from None
    img = _to_8bit(img, settings.color)

    if settings.resize == "stretch":
        out = img.resize((size, size), Image.BILINEAR, reducing_gap=3.0)
        ox = oy = 0.0
        fx = fy = 1.0
    else:
        s = size / max(sw, sh)
        nw, nh = max(1, round(sw * s)), max(1, round(sh * s))
        resized = img.resize((nw, nh), Image.BILINEAR, reducing_gap=3.0)
        if settings.resize == "fit":
            out, ox, oy = resized, 0.0, 0.0
            fx = fy = 1.0
        else:  # pad: centre on a black square
            out = Image.new(resized.mode, (size, size), 0)
            px, py = (size - nw) // 2, (size - nh) // 2
            out.paste(resized, (px, py))
            ox, oy, fx, fy = px / size, py / size, nw / size, nh / size
    buf = io.BytesIO()
    if settings.format == "jpeg":
        out.save(buf, "JPEG", quality=settings.jpeg_quality)
    else:
        out.save(buf, "PNG", optimize=False, compress_level=6)
    return PreparedImage(
        data=buf.getvalue(),
        format=settings.format,
        width=out.width,
        height=out.height,
        source_width=sw,
        source_height=sh,
        offset_x=ox,
        offset_y=oy,
        scale_x=fx,
        scale_y=fy,
    )


def map_box(box: dict, prepared: PreparedImage, units: str) -> dict:
    """A source box (pixels or fractions of the source) in fractions of the stored image.

    Coordinates are clipped to [0, 1]; label and order are kept as given (the schema
    check rejects boxes that are degenerate after clipping).
    """
    x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
    if units == "px":
        x1, x2 = x1 / prepared.source_width, x2 / prepared.source_width
        y1, y2 = y1 / prepared.source_height, y2 / prepared.source_height

    def clip(v: float) -> float:
        return min(1.0, max(0.0, v)) if math.isfinite(v) else v

    return {
        "label": str(box.get("label") or ""),
        "x1": clip(prepared.offset_x + x1 * prepared.scale_x),
        "y1": clip(prepared.offset_y + y1 * prepared.scale_y),
        "x2": clip(prepared.offset_x + x2 * prepared.scale_x),
        "y2": clip(prepared.offset_y + y2 * prepared.scale_y),
    }
