"""DICOM -> 8-bit grayscale: rescale, window, MONOCHROME1, refusals, privacy; the same
conversion in the API's image decoding and in preprocessing."""

from __future__ import annotations

import io
import logging

import numpy as np
import pytest
from dicom_fixtures import CANARY_ID, CANARY_NAME, make_dicom
from PIL import Image

from medray.data.config import ImageSettings
from medray.data.dicom import (
    DicomError,
    dicom_to_image,
    is_dicom,
    linear_window,
    percentile_window,
    to_display,
)
from medray.data.images import ImageRejected, prepare_image
from medray.serving.images import ImageError, http_status, open_image

pytestmark = pytest.mark.unit


def _hu_ramp(rows: int = 32, cols: int = 64) -> np.ndarray:
    """CT-like values in Hounsfield units, -1000..1000 along x."""
    return np.tile(np.linspace(-500, 500, cols).round() * 2, (rows, 1))  # even: slope 2 is exact


def _pixels(img: Image.Image) -> np.ndarray:
    assert img.mode == "L"
    return np.asarray(img)


def test_linear_window_follows_the_dicom_formula():
    out = linear_window(np.array([-161.0, -159.5, 39.5, 40.0, 239.0, 240.0]), 40, 400)
    # below c - 0.5 - (w-1)/2 = -160 -> 0; above c - 0.5 + (w-1)/2 = 239 -> 255; linear between
    assert out[0] == 0 and out[-1] == 255
    assert out[1] == 0 and out[2] == 128 and out[3] == 128 and out[4] == 255
    assert out.dtype == np.uint8
    with pytest.raises(ValueError, match="under 1"):
        linear_window(np.zeros(3), 0, 0.5)


def test_rescale_is_applied_before_the_window():
    hu = _hu_ramp()
    stored = (hu + 1024) / 2  # RescaleSlope 2, RescaleIntercept -1024 give back the HU
    data = make_dicom(
        stored, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400
    )
    got = _pixels(dicom_to_image(data))
    assert np.array_equal(got, linear_window(hu, 40, 400))
    assert got.min() == 0 and got.max() == 255  # air and bone saturate in a soft-tissue window
    assert 0 < (got == 0).mean() < 1 and 0 < (got == 255).mean() < 1


def test_signed_pixels_are_read_as_signed():
    hu = _hu_ramp()
    data = make_dicom(hu, signed=True, WindowCenter=0, WindowWidth=2001)
    got = _pixels(dicom_to_image(data))
    assert np.array_equal(got, linear_window(hu, 0, 2001))
    assert got[:, 0].max() == 0 and got[:, -1].min() == 255


def test_the_first_of_several_windows_is_used():
    hu = _hu_ramp()
    one = make_dicom(hu + 1024, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    many = make_dicom(
        hu + 1024, RescaleIntercept=-1024, WindowCenter=[40, -600], WindowWidth=[400, 1500]
    )
    assert np.array_equal(_pixels(dicom_to_image(one)), _pixels(dicom_to_image(many)))


def test_without_a_window_a_percentile_window_ignores_outliers():
    arr = np.tile(np.arange(0, 1000, dtype=np.float64), (40, 1))
    arr[0, 0] = 60000  # one hot pixel must not squash the image into a few grey levels
    got = _pixels(dicom_to_image(make_dicom(arr)))
    assert np.array_equal(got, percentile_window(arr, 0.5, 99.5))
    assert len(np.unique(got)) > 200 and got[5, 500] in range(120, 136)
    # a width under 1 is no window either
    bad = _pixels(dicom_to_image(make_dicom(arr, WindowCenter=10, WindowWidth=0)))
    assert np.array_equal(bad, got)


def test_a_flat_image_is_black_not_an_error():
    got = _pixels(dicom_to_image(make_dicom(np.full((20, 20), 7))))
    assert got.max() == 0


def test_monochrome1_is_inverted():
    hu = _hu_ramp()
    tags = {"RescaleIntercept": -1024, "WindowCenter": 40, "WindowWidth": 400}
    m2 = _pixels(dicom_to_image(make_dicom(hu + 1024, **tags)))
    m1 = _pixels(dicom_to_image(make_dicom(hu + 1024, photometric="MONOCHROME1", **tags)))
    assert np.array_equal(m1, 255 - m2)
    assert np.array_equal(
        to_display(hu, center=40, width=400, monochrome1=True), 255 - linear_window(hu, 40, 400)
    )


def test_8bit_files_convert_too():
    arr = np.tile(np.arange(256), (20, 1))
    got = _pixels(dicom_to_image(make_dicom(arr, bits=8, WindowCenter=128, WindowWidth=256)))
    assert np.array_equal(got[0], np.arange(256))


def test_colour_files_become_their_luminance():
    rgb = np.zeros((20, 30, 3), dtype=np.uint8)
    rgb[:, :10] = (255, 0, 0)
    rgb[:, 10:20] = (0, 255, 0)
    rgb[:, 20:] = (200, 200, 200)
    got = _pixels(dicom_to_image(make_dicom(rgb, photometric="RGB", bits=8)))
    assert np.array_equal(got, np.asarray(Image.fromarray(rgb, "RGB").convert("L")))
    assert got[0, 0] == 76 and got[0, 15] == 150 and got[0, 25] == 200


@pytest.mark.parametrize(
    "kwargs,code,status,message",
    [
        (
            {"pixels": np.zeros((3, 16, 16)), "NumberOfFrames": 3},
            "dicom_multiframe",
            422,
            "multi-frame DICOM \\(3 frames\\) is not supported",
        ),
        ({"pixels": None}, "dicom_no_pixel_data", 422, "has no pixel data"),
        (
            {"pixels": np.zeros((16, 16)), "compressed": True},
            "dicom_unsupported_transfer_syntax",
            415,
            "compressed as JPEG 2000.*cannot be decoded here",
        ),
    ],
)
def test_refusals_are_specific_4xx_without_identifying_tags(kwargs, code, status, message):
    pixels = kwargs.pop("pixels")
    data = make_dicom(pixels, **kwargs)
    with pytest.raises(DicomError, match=message) as direct:
        dicom_to_image(data)
    assert direct.value.code == code
    with pytest.raises(ImageError, match=f"image: .*{message}") as e:
        open_image(data, max_pixels=10**6)
    assert e.value.code == code and http_status(e.value) == status
    assert CANARY_NAME not in str(e.value) and CANARY_ID not in str(e.value)
    with pytest.raises(ImageRejected, match=f"DICOM: .*{message}"):
        prepare_image(data, ImageSettings(size=32))


def test_pixel_limit_is_checked_before_decoding():
    data = make_dicom(np.zeros((100, 200)))
    with pytest.raises(ImageError, match="DICOM image is 200x100 = 20000 pixels") as e:
        open_image(data, max_pixels=10_000)
    assert e.value.code == "image_too_large" and http_status(e.value) == 413


def test_not_a_dicom_file_behind_the_magic_bytes():
    data = b"\x00" * 128 + b"DICM" + b"\x00" * 64
    assert is_dicom(data)
    with pytest.raises(ImageError, match="image: .*DICOM") as e:
        open_image(data, max_pixels=10**6)
    assert http_status(e.value) == 422
    truncated = make_dicom(_hu_ramp(), WindowCenter=0, WindowWidth=100)[:-500]
    with pytest.raises(ImageError, match="DICOM") as e:
        open_image(truncated, max_pixels=10**6)
    assert http_status(e.value) == 422


def test_identifying_tags_are_never_read(caplog):
    from medray.data.dicom import _read

    data = make_dicom(_hu_ramp(), WindowCenter=0, WindowWidth=100)
    assert CANARY_NAME.encode() in data  # the file has them ...
    with caplog.at_level(logging.DEBUG):
        ds = _read(data)
        dicom_to_image(data)
    # ... the conversion never parses them
    for tag in ("PatientName", "PatientID", "PatientBirthDate", "InstitutionName"):
        assert tag not in ds
    assert CANARY_NAME not in caplog.text and "CANARY" not in caplog.text


def test_api_decoding_gives_the_converted_image_as_rgb():
    hu = _hu_ramp(48, 64)
    data = make_dicom(hu + 1024, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    img = open_image(data, max_pixels=10**6)
    assert img.mode == "RGB" and img.size == (64, 48)
    assert np.array_equal(np.asarray(img)[..., 0], linear_window(hu, 40, 400))
    assert np.array_equal(np.asarray(img)[..., 0], np.asarray(img)[..., 2])


def test_preprocessing_reads_dicom_files_through_the_same_conversion(tmp_path):
    from medray.data.transform import load_image

    hu = _hu_ramp(64, 64)
    path = tmp_path / "scan.dcm"
    path.write_bytes(
        make_dicom(hu + 1024, RescaleIntercept=-1024, WindowCenter=40, WindowWidth=400)
    )
    prepared, sha, reason = load_image(
        str(path), "scan.dcm", ImageSettings(size=64, color="auto", format="png")
    )
    assert reason is None and sha and prepared.format == "png"
    stored = Image.open(io.BytesIO(prepared.data))
    assert stored.mode == "L" and stored.size == (64, 64)
    assert np.array_equal(np.asarray(stored), linear_window(hu, 40, 400))

    path.write_bytes(make_dicom(np.zeros((2, 16, 16)), NumberOfFrames=2))
    prepared, _, reason = load_image(str(path), "scan.dcm", ImageSettings(size=64))
    assert prepared is None and reason.startswith("DICOM: multi-frame") and "scan.dcm" in reason
