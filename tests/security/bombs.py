"""Hostile DICOM files built on the fly: a deflate bomb and a pixel-size bomb (nothing this large is stored)."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from tests.inference.conftest import INFERENCE_FIXTURES

CT = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"


def deflate_bomb(target: Path, inflated_mb: int) -> Path:
    """A CT header whose deflated data set inflates to ``inflated_mb`` MB of zero pixels (a few hundred kB on disk)."""
    ds = dcmread(CT)
    pixel_bytes = inflated_mb << 20
    ds.Rows, ds.Columns, ds.NumberOfFrames = 512, 512, inflated_mb * 2  # 512 kB frames: consistent sizes
    del ds.PixelData
    ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    header = DicomBytesIO()
    header.is_little_endian, header.is_implicit_VR = True, False
    header.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(header, ds.file_meta, enforce_standard=True)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds, ExplicitVRLittleEndian)  # little endian explicit, then deflated
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    with target.open("wb") as out:
        out.write(header.getvalue())
        out.write(compressor.compress(body.getvalue()))
        out.write(compressor.compress(b"\xe0\x7f\x10\x00OW\x00\x00" + struct.pack("<I", pixel_bytes)))
        zeros = b"\x00" * (1 << 20)
        for _ in range(inflated_mb):
            out.write(compressor.compress(zeros))
        out.write(compressor.flush())
    return target


def pixel_bomb(target: Path) -> Path:
    """A small file whose header declares 65535 x 65535 x 1000 frames of 16-bit pixels (8.6 TB decoded)."""
    ds = dcmread(CT)
    ds.Rows, ds.Columns, ds.NumberOfFrames = 65535, 65535, 1000
    ds.save_as(target, enforce_file_format=True)
    return target


def truncated_pixels(target: Path) -> Path:
    """A CT whose native pixel data holds a quarter of the image it declares."""
    ds = dcmread(CT)
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 4]
    ds.save_as(target, enforce_file_format=True)
    return target
