"""DICOM files made in the tests with pydicom (no file is shipped)."""

from __future__ import annotations

import io

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    SecondaryCaptureImageStorage,
    generate_uid,
)

CANARY_NAME = "CANARY^ZX81"
CANARY_ID = "CANARY-ID-4711"


def make_dicom(
    pixels: np.ndarray | None,
    *,
    photometric: str = "MONOCHROME2",
    bits: int = 16,
    signed: bool = False,
    compressed: bool = False,
    **tags,
) -> bytes:
    """A DICOM Part 10 file holding ``pixels`` (rows x cols, frames x rows x cols, or
    rows x cols x 3 for ``photometric="RGB"``)
    with identifying tags set to the canary values; ``tags`` are set as given
    (``WindowCenter=40``, ``RescaleSlope=0.5``, ``NumberOfFrames=3``, ...).
    ``pixels=None`` makes a file without pixel data; ``compressed`` a JPEG 2000 one whose
    encapsulated data no decoder can read."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = JPEG2000Lossless if compressed else ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = CANARY_NAME
    ds.PatientID = CANARY_ID
    ds.PatientBirthDate = "19010101"
    ds.InstitutionName = "CANARY HOSPITAL"
    ds.Modality = "CR"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if pixels is not None:
        colour = photometric == "RGB"
        ds.Rows, ds.Columns = (int(v) for v in (pixels.shape[:2] if colour else pixels.shape[-2:]))
        if colour:
            ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated = bits
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 1 if signed else 0
        dtype = {8: np.uint8, 16: np.uint16}[bits]
        if signed:
            dtype = {8: np.int8, 16: np.int16}[bits]
    for k, v in tags.items():
        setattr(ds, k, v)
    if pixels is not None:
        raw = np.ascontiguousarray(pixels.astype(dtype)).tobytes()
        if compressed:
            ds.PixelData = encapsulate([b"\xff\x4f\xff\x51not-a-codestream"])
            ds["PixelData"].VR = "OB"
        else:
            ds.PixelData = raw
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
