"""Request images: base64 / data-URL payloads -> safely decoded, bounded RGB images.

Decoding itself is :func:`medray.imaging.decode_image` (pixel limit checked from the
header before any pixel is decoded; truncated files fail). This module adds the
transport (base64, ``data:`` URLs), error codes for the HTTP layer and a downscale to
what the models need.
"""

from __future__ import annotations

import base64
import binascii
import re

from PIL import Image

from medray.imaging import ImageDecodeError, decode_image

_DATA_URL = re.compile(
    r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?P<b64>;base64)?,(?P<data>.*)$", re.DOTALL
)


class ImageError(ValueError):
    """The request's image is unusable; the message says why (shown to the client).

    Attributes:
        code: machine-readable reason (``invalid_image``, ``image_too_large``, ...).
    """

    def __init__(self, message: str, code: str = "invalid_image") -> None:
        super().__init__(message)
        self.code = code


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


def open_image(
    data: bytes, max_pixels: int, max_side: int = 1024, what: str = "image"
) -> Image.Image:
    """Decode request image bytes into an RGB image no larger than ``max_side``.

    Raises:
        ImageError: with code ``image_too_large`` (over ``max_pixels``) or
            ``invalid_image`` (empty, not an image, truncated, corrupt).
    """
    try:
        img = decode_image(data, max_pixels=max_pixels)
    except ImageDecodeError as e:
        code = "image_too_large" if "over the limit" in str(e) else "invalid_image"
        raise ImageError(f"{what}: {e}", code) from None
    if max(img.size) > max_side:
        img = img.copy()
        img.thumbnail((max_side, max_side))
    return img
