"""Whether two received copies of one SOP Instance hold the same data set, whatever transfer syntax carried each.

A SOP Instance is its content, not its encoding (PS3.5 8, 10): the same instance sent again in another transfer
syntax is the same instance. That happens whenever a PACS re-sends what it received: many compress on archiving
(JPEG-LS or JPEG 2000 lossless, RLE), and the sender's first proposed transfer syntax picks the encoding on the wire
(implicit VR, deflate, big endian from an old modality). A byte comparison took each such re-send for a differing
copy: refused (0x0111, which fails the PACS's batch) and quarantined. Here the header is compared with the
transfer syntax taken out (both encoded as Implicit VR Little Endian, which carries no VR) and the pixels decoded
frame by frame. Lossy compression changes the pixels, so a lossy copy of a lossless instance still differs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from itertools import zip_longest
from pathlib import Path

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_file_meta_info
from pydicom.filewriter import write_dataset
from pydicom.pixels import iter_pixels
from pydicom.uid import DeflatedExplicitVRLittleEndian

from inference.instance_limits import inflated_size

__all__ = ["same_data_set"]

log = logging.getLogger(__name__)

_DEFER_BYTES = 64 * 1024
_DEFLATED_COMPARE_BYTES = 256 * 1024 * 1024
_PIXEL_DATA = 0x7FE00010
_PHOTOMETRIC_INTERPRETATION = 0x00280004
_PLANAR_CONFIGURATION = 0x00280006
# A note a transcoder adds about its compression ("Lossless JPEG compression, selection value 1, ...", dcmtk's
# dcmcjpeg); the pixels, compared below, say whether the compression lost anything.
_DERIVATION_DESCRIPTION = 0x00082111
# A thumbnail of the pixels, encapsulated with the transfer syntax (a GE mammogram's icon is JPEG-LS in a JPEG-LS
# file): not read by any model, and its pixels are those compared below at full size.
_ICON_IMAGE_SEQUENCE = 0x00880200
_ENCODING = (
    _PIXEL_DATA,
    _PHOTOMETRIC_INTERPRETATION,
    _PLANAR_CONFIGURATION,
    _DERIVATION_DESCRIPTION,
    _ICON_IMAGE_SEQUENCE,
)
# Colour encodings that decode to the same RGB values: a transcoder may change one into another (JPEG 2000
# lossless writes YBR_RCT for RGB), and frames are compared as RGB. MONOCHROME1 and MONOCHROME2 are not
# interchangeable: the same values mean inverted images.
_COLOUR = frozenset({"RGB", "YBR_FULL", "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420"})


def _header_bytes(ds: Dataset) -> bytes:
    """The data set without its pixels and their encoding, as Implicit VR Little Endian (no VR, one byte order)."""
    kept = Dataset()
    for element in ds:
        if element.tag not in _ENCODING:
            kept.add(element)
    buffer = DicomBytesIO()
    buffer.is_little_endian = True
    buffer.is_implicit_VR = True
    write_dataset(buffer, kept)
    return buffer.getvalue()


def _same_photometric(first: Dataset, second: Dataset) -> bool:
    a = str(first.get("PhotometricInterpretation", "")).strip()
    b = str(second.get("PhotometricInterpretation", "")).strip()
    return a == b or (a in _COLOUR and b in _COLOUR)


def _deflated(path: Path) -> bool:
    return str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian


def _frames(path: Path) -> Iterator[np.ndarray]:
    # One frame at a time from the file: a multi-frame instance is never decoded whole. pydicom reads a deflated
    # file's frames only from the inflated data set (bounded by the instance limit checked on receipt).
    if _deflated(path):
        return iter_pixels(dcmread(path))
    return iter_pixels(path)


def _same_frames(first: Path, second: Path) -> bool:
    for a, b in zip_longest(_frames(first), _frames(second)):
        if a is None or b is None or a.shape != b.shape or not np.array_equal(a, b):
            return False
    return True


def same_data_set(first: Path, second: Path) -> bool:
    """Whether ``first`` and ``second`` (Part 10 files of one SOP Instance UID) hold the same header and pixels.

    False when either cannot be read or decoded: such a copy is treated as differing, as before.
    """
    try:
        for path in (first, second):
            if _deflated(path):
                # pydicom inflates a deflated data set whole: past this size the copies are not compared (taken as
                # differing, as before) rather than held in a receiver's memory. InstanceTooLarge lands below.
                inflated_size(path, _DEFLATED_COMPARE_BYTES)
        # Large values (the pixels) are left unread here; the header's are read as it is encoded.
        a = dcmread(first, defer_size=_DEFER_BYTES)
        b = dcmread(second, defer_size=_DEFER_BYTES)
        if not _same_photometric(a, b) or _header_bytes(a) != _header_bytes(b):
            return False
        if ("PixelData" in a) != ("PixelData" in b):
            return False
        return "PixelData" not in a or _same_frames(first, second)
    except Exception as exc:  # noqa: BLE001 - received bytes: any failure to read or decode means "not shown the same"
        log.info("could not compare two copies of an instance by content (%s): taken as differing", type(exc).__name__)
        return False
