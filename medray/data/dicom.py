"""DICOM files -> 8-bit grayscale images: the one conversion of serving and preprocessing.

:func:`dicom_to_image` reads a DICOM Part 10 file with pydicom and returns what a
radiologist's viewer would show by default, as an 8-bit ``L`` image:

1. Pixel data rescaled to modality units (``RescaleSlope`` / ``RescaleIntercept``).
2. Windowed with the file's ``WindowCenter`` / ``WindowWidth`` (the first value when
   several are given) by the linear VOI function of DICOM PS3.3 C.11.2.1.2; a file
   without a usable window gets a percentile window (:data:`PERCENTILE_WINDOW`).
3. ``MONOCHROME1`` (white is zero) inverted, so bright means dense in every image.

Colour files (RGB, YBR) are converted to RGB by pydicom and then to luminance.
Refused with :class:`DicomError` (a specific message, no tag values in it): multi-frame
files, files without pixel data, pixel data the installed decoders cannot decode
(a compressed transfer syntax), and images over the pixel limit (checked from ``Rows``
and ``Columns`` before any pixel is decoded).

Privacy: only the tags the conversion needs are parsed (``specific_tags``), so
identifying tags (``PatientName``, ``PatientID``, ...) are never read into memory, never
logged and never returned.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image

from medray.imaging import DEFAULT_MAX_PIXELS

PERCENTILE_WINDOW = (0.5, 99.5)  # the window of a file without WindowCenter/WindowWidth

# The only tags read from a file (the file meta group 0002 is always read by pydicom).
_TAGS = [
    "SpecificCharacterSet",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "NumberOfFrames",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "RescaleIntercept",
    "RescaleSlope",
    "WindowCenter",
    "WindowWidth",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "PixelData",
]


class DicomError(ValueError):
    """A DICOM file that cannot be converted; the message says why (shown to the client).

    Attributes:
        code: ``dicom_multiframe``, ``dicom_no_pixel_data``, ``dicom_unsupported_transfer_syntax``,
            ``image_too_large`` or ``invalid_dicom``.
    """

    def __init__(self, message: str, code: str = "invalid_dicom") -> None:
        super().__init__(message)
        self.code = code


def is_dicom(data: bytes) -> bool:
    """True for a DICOM Part 10 file: a 128-byte preamble, then ``DICM``."""
    return len(data) >= 132 and data[128:132] == b"DICM"


def _first(value) -> float | None:
    """The first value of a possibly multi-valued numeric tag; None when absent or bad."""
    if value is None:
        return None
    if not isinstance(value, (str, bytes, int, float)):  # MultiValue / list
        value = next(iter(value), None)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """DICOM's linear VOI function (PS3.3 C.11.2.1.2.1) onto 0..255, as uint8.

    ``width`` must be at least 1 (the standard's constraint).
    """
    if width < 1:
        raise ValueError(f"window width {width} is under 1")
    x = np.asarray(values, dtype=np.float64)
    y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0 if width > 1 else x * 0.0
    y = np.where(x <= center - 0.5 - (width - 1) / 2, 0.0, y)
    y = np.where(x > center - 0.5 + (width - 1) / 2, 255.0, y)
    return np.rint(np.clip(y, 0.0, 255.0)).astype(np.uint8)


def percentile_window(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Linear map of the ``lo``..``hi`` percentiles of ``values`` onto 0..255 (uint8);
    a flat image becomes black."""
    x = np.asarray(values, dtype=np.float64)
    a, b = (float(v) for v in np.percentile(x, [lo, hi]))
    if b <= a:
        return np.zeros(x.shape, dtype=np.uint8)
    return np.rint(np.clip((x - a) * (255.0 / (b - a)), 0.0, 255.0)).astype(np.uint8)


def to_display(
    pixels: np.ndarray,
    *,
    slope: float = 1.0,
    intercept: float = 0.0,
    center: float | None = None,
    width: float | None = None,
    monochrome1: bool = False,
) -> np.ndarray:
    """Stored grayscale pixel values -> 8-bit display values: rescale, window, invert."""
    values = np.asarray(pixels, dtype=np.float64) * slope + intercept
    if center is not None and width is not None and width >= 1:
        out = linear_window(values, center, width)
    else:
        out = percentile_window(values, *PERCENTILE_WINDOW)
    return 255 - out if monochrome1 else out


def _read(data: bytes):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings():
            # pydicom warns about odd values quoting them: nothing read may reach a log.
            warnings.simplefilter("ignore")
            return pydicom.dcmread(io.BytesIO(data), specific_tags=_TAGS)
    except InvalidDicomError:
        raise DicomError("not a valid DICOM file") from None
    except Exception as e:  # a truncated or malformed data set; the type names the fault
        raise DicomError(f"unreadable DICOM file ({type(e).__name__})") from None


def dicom_to_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """A DICOM file's bytes -> its 8-bit grayscale (``L``) display image.

    Raises:
        DicomError: invalid file, multi-frame, no pixel data, an undecodable (compressed)
            transfer syntax, over ``max_pixels``, or an unsupported pixel layout.
    """
    ds = _read(data)
    frames = int(_first(ds.get("NumberOfFrames")) or 1)
    if frames > 1:
        raise DicomError(
            f"multi-frame DICOM ({frames} frames) is not supported: send one frame "
            "(one slice or view) per request",
            "dicom_multiframe",
        )
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise DicomError("the DICOM file has no pixel data (not an image)", "dicom_no_pixel_data")
    rows, cols = int(ds.get("Rows") or 0), int(ds.get("Columns") or 0)
    if rows < 1 or cols < 1:
        raise DicomError(f"the DICOM file's image is {cols}x{rows} pixels (no pixels)")
    if rows * cols > max_pixels:
        raise DicomError(
            f"DICOM image is {cols}x{rows} = {rows * cols} pixels, over the limit of {max_pixels}",
            "image_too_large",
        )
    syntax = ds.file_meta.get("TransferSyntaxUID")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as e:
        if syntax is not None and syntax.is_compressed:
            raise DicomError(
                f"the DICOM file's pixel data is compressed as {syntax.name} ({syntax}), "
                "which cannot be decoded here: send it uncompressed (Explicit VR Little "
                "Endian) or as PNG",
                "dicom_unsupported_transfer_syntax",
            ) from None
        raise DicomError(
            f"the DICOM file's pixel data cannot be decoded ({type(e).__name__})"
        ) from None
    photometric = str(ds.get("PhotometricInterpretation") or "MONOCHROME2").upper()
    if pixels.ndim == 3 and pixels.shape[-1] in (3, 4):  # colour: pydicom gives RGB
        rgb = np.clip(pixels, 0, 255).astype(np.uint8)[..., :3]
        return Image.fromarray(rgb, "RGB").convert("L")
    if pixels.ndim != 2:
        raise DicomError(f"unsupported DICOM pixel layout {pixels.shape} ({photometric})")
    out = to_display(
        pixels,
        slope=_first(ds.get("RescaleSlope")) or 1.0,
        intercept=_first(ds.get("RescaleIntercept")) or 0.0,
        center=_first(ds.get("WindowCenter")),
        width=_first(ds.get("WindowWidth")),
        monochrome1=photometric == "MONOCHROME1",
    )
    return Image.fromarray(out, "L")


def dicom_to_png(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> bytes:
    """:func:`dicom_to_image` encoded as PNG bytes (lossless)."""
    buf = io.BytesIO()
    dicom_to_image(data, max_pixels).save(buf, "PNG", compress_level=1)
    return buf.getvalue()
