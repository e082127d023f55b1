"""Request images: base64 / data-URL payloads -> checked, bounded RGB images.

Before any pixel is decoded a request image must be in an accepted format
(:data:`IMAGE_FORMATS`: PNG and JPEG, recognised by their magic bytes, so Pillow never
runs a plugin for anything else, e.g. EPS, which calls Ghostscript) and under the pixel
limit (Pillow's own decompression-bomb error and warning become ``image_too_large``).
Images the models cannot take as they are (16-bit, palette, alpha, CMYK; an extreme
aspect ratio or a tiny side; larger than ``max_side``) are converted by the one image
transform of preprocessing, :func:`medray.data.images.prepare_image` (8-bit conversion,
pad to a square or fit), so the model sees what training saw; the result is decoded to RGB
by :func:`medray.imaging.decode_image` like a dataset row (``contracts.reasoner.row_image``).

DICOM (a 128-byte preamble, then ``DICM``) is converted to an 8-bit grayscale PNG by
:func:`medray.data.dicom.dicom_to_png`, the conversion preprocessing uses too (rescale,
window, MONOCHROME1 inverted; multi-frame refused); everything after the converter is
shared. :func:`register_format` adds another format with its magic-byte test and converter.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from medray.data.dicom import DicomError, dicom_to_png, is_dicom
from medray.imaging import ImageDecodeError, decode_image

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL
)

MIN_SIDE = 16  # an image whose larger side is smaller is refused (nothing to see)
MAX_ASPECT = 20.0  # beyond this (or a side under MIN_SIDE) an image is padded to a square


class ImageError(ValueError):
    """The request's image is unusable; the message says why (shown to the client).

    Attributes:
        code: machine-readable reason (``invalid_image``, ``image_too_large``,
            ``image_too_small``, ``unsupported_image_format``; for DICOM also
            ``invalid_dicom``, ``dicom_multiframe``, ``dicom_no_pixel_data``,
            ``dicom_unsupported_transfer_syntax``).
    """

    def __init__(self, message: str, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class ImageFormat:
    """An accepted request image format.

    Attributes:
        name: Pillow's format name (the only plugin Pillow may use for it).
        sniff: True when the bytes start like this format.
        to_png: converter for formats Pillow should not decode itself (DICOM):
            ``(bytes, max_pixels) -> PNG bytes``, refusing an image over ``max_pixels``
            before decoding it; None to decode with Pillow's ``name`` plugin. A
            converter's ``ValueError`` with a ``code`` keeps its code.
    """

    name: str
    sniff: Callable[[bytes], bool]
    to_png: Callable[[bytes, int], bytes] | None = None


IMAGE_FORMATS: dict[str, ImageFormat] = {
    "PNG": ImageFormat("PNG", lambda b: b.startswith(b"\x89PNG\r\n\x1a\n")),
    "JPEG": ImageFormat("JPEG", lambda b: b.startswith(b"\xff\xd8\xff")),
    "DICOM": ImageFormat("DICOM", is_dicom, dicom_to_png),
}

# Only to name a refused format in the error message; never decoded.
_KNOWN_OTHERS = (
    (b"GIF8", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"%!PS", "PostScript/EPS"),
    (b"\xc5\xd0\xd3\xc6", "EPS"),
    (b"%PDF", "PDF"),
    (b"RIFF", "WebP/RIFF"),
    (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"),
)


def register_format(fmt: ImageFormat) -> None:
    """Accept another request image format (the DICOM hook)."""
    IMAGE_FORMATS[fmt.name] = fmt


def accepted_formats() -> str:
    return ", ".join(IMAGE_FORMATS)


def sniff_format(data: bytes, what: str = "image") -> ImageFormat:
    """The accepted format ``data`` is in.

    Raises:
        ImageError: ``unsupported_image_format`` naming the format when it is known.
    """
    for fmt in IMAGE_FORMATS.values():
        if fmt.sniff(data):
            return fmt
    other = next((name for magic, name in _KNOWN_OTHERS if data.startswith(magic)), None)
    if other is None:  # not an image at all (or a format nobody would send)
        raise ImageError(f"{what}: not an image; accepted image formats: {accepted_formats()}")
    raise ImageError(
        f"{what}: a {other} file; accepted image formats: {accepted_formats()}",
        "unsupported_image_format",
    )


def decode_base64(data: str, what: str = "image") -> bytes:
    """Bytes of a base64 string or a base64 ``data:`` URL (``data:image/png;base64,...``).

    Raises:
        ImageError: empty, a remote URL, or not base64.
    """
    if not isinstance(data, str) or not data.strip():
        raise ImageError(f"{what} is empty: send the image as base64 or a data: URL")
    s = data.strip()
    if s.startswith(("http://", "https://")):
        raise ImageError(
            f"{what}: remote image URLs are not fetched; send the image inline as "
            "data:image/png;base64,...",
            "unsupported_image_url",
        )
    if s.startswith("data:"):
        m = _DATA_URL.match(s)
        if not m or not m.group("b64"):
            raise ImageError(
                f"{what}: only base64 data: URLs are accepted (data:image/png;base64,...)"
            )
        s = m.group("data")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise ImageError(f"{what} is not valid base64") from None


def _header(data: bytes, fmt: str, what: str) -> tuple[Image.Image, bool]:
    """Open (not decode) ``data`` with only the ``fmt`` plugin; also whether Pillow
    warned that it is a decompression bomb. Pillow's bomb error is an ImageError."""
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=[fmt])
        bomb = any(issubclass(w.category, Image.DecompressionBombWarning) for w in caught)
        return img, bomb
    except Image.DecompressionBombError as e:
        raise ImageError(f"{what}: decompression bomb refused: {e}", "image_too_large") from None
    except UnidentifiedImageError:
        raise ImageError(f"{what}: not an image (not a valid {fmt} file)") from None
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError(f"{what}: truncated or corrupt image: {e}") from None


def open_image(
    data: bytes,
    max_pixels: int,
    max_side: int = 1024,
    what: str = "image",
    *,
    min_side: int = MIN_SIDE,
    max_aspect: float = MAX_ASPECT,
) -> Image.Image:
    """Check and decode request image bytes into an RGB image the models can take.

    Accepted formats only; at most ``max_pixels``; the larger side at least ``min_side``.
    Unusual modes, extreme aspect ratios (over ``max_aspect``, or a side under
    ``min_side``: padded to a square) and sides over ``max_side`` (fitted) are converted
    by preprocessing's :func:`~medray.data.images.prepare_image`.

    Raises:
        ImageError: ``unsupported_image_format``, ``image_too_large`` (over
            ``max_pixels`` or a decompression bomb), ``image_too_small`` or
            ``invalid_image`` (empty, truncated, corrupt).
    """
    from medray.data.config import ImageSettings
    from medray.data.images import ImageRejected, prepare_image

    if not data:
        raise ImageError(f"{what}: empty image data")
    fmt = sniff_format(data, what)
    if fmt.to_png is not None:
        try:
            data, fmt = fmt.to_png(data, max_pixels), IMAGE_FORMATS["PNG"]
        except DicomError as e:
            raise ImageError(f"{what}: {e}", e.code) from None
        except Exception as e:
            raise ImageError(f"{what}: cannot convert the {fmt.name} file: {e}") from None
    img, bomb = _header(data, fmt.name, what)
    w, h = img.size
    if bomb:
        raise ImageError(
            f"{what}: image is {w}x{h} = {w * h} pixels: a decompression bomb (over "
            f"Pillow's limit of {Image.MAX_IMAGE_PIXELS} pixels), refused before decoding",
            "image_too_large",
        )
    if w * h > max_pixels:
        raise ImageError(
            f"{what}: image is {w}x{h} = {w * h} pixels, over the limit of {max_pixels}",
            "image_too_large",
        )
    if max(w, h) < min_side:
        raise ImageError(
            f"{what}: image is {w}x{h} pixels; its larger side must be at least {min_side}",
            "image_too_small",
        )
    extreme = min(w, h) < min_side or max(w, h) / min(w, h) > max_aspect
    if img.mode in ("RGB", "L") and not extreme and max(w, h) <= max_side:
        try:
            return decode_image(data, max_pixels=max_pixels)
        except ImageDecodeError as e:
            raise ImageError(f"{what}: {e}") from None
    settings = ImageSettings(
        size=max(8, min(max(w, h), max_side, 4096)),
        resize="pad" if extreme else "fit",
        color="auto",
        format="png",
        max_pixels=max_pixels,
        max_file_bytes=len(data) + 1,
    )
    try:
        prepared = prepare_image(data, settings)
        return decode_image(prepared.data, max_pixels=max_pixels)
    except (ImageRejected, ImageDecodeError) as e:
        raise ImageError(f"{what}: truncated or corrupt image: {e}") from None


_STATUS = {
    "image_too_large": 413,
    "unsupported_image_format": 415,
    "dicom_unsupported_transfer_syntax": 415,  # a compression no installed decoder reads
}


def http_status(error: ImageError) -> int:
    """The HTTP status of an image error: 413 too large, 415 format (or a DICOM
    compression that cannot be decoded), else 422."""
    return _STATUS.get(error.code, 422)
