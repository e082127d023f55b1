"""Safe image decoding shared by retrieval, training and serving."""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

DEFAULT_MAX_PIXELS = 40_000_000  # a 10k x 10k image (100 MP) is refused before decoding


class ImageDecodeError(ValueError):
    """Bytes that are not a decodable image, or an image over the pixel limit."""


def decode_image(
    data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, mode: str = "RGB"
) -> Image.Image:
    """Decode ``data`` fully into a PIL image in ``mode``.

    The size is checked from the header before any pixel is decoded, so decompression
    bombs are refused cheaply; truncated files fail here, not later in a model.

    Raises:
        ImageDecodeError: with a specific reason (not an image, truncated, too large).
    """
    if not data:
        raise ImageDecodeError("empty image data")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image (unrecognised format)") from None
    except OSError as e:
        raise ImageDecodeError(f"truncated or corrupt image: {e}") from None
    width, height = img.size
    if width * height > max_pixels:
        raise ImageDecodeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {max_pixels}"
        )
    try:
        img.load()
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageDecodeError(f"truncated or corrupt image: {e}") from None
    return img.convert(mode) if img.mode != mode else img
