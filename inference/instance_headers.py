"""Read and validate the header of one received instance: the gate between the network and the spool.

Received bytes are untrusted: every check that can refuse an instance happens here, before it is
recorded, so that a refused instance never becomes part of a study. Only broken data is refused (not
DICOM, missing or malformed UIDs, an unreadable header); whether valid DICOM is scored is intake's call.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from pydicom import dcmread
from pydicom.charset import python_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset, FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from inference.codestream import fragment_limit, too_many_fragments
from inference.errors import (
    CodestreamMismatch,
    InstanceTooLarge,
    MissingAttribute,
    NotDicom,
    TruncatedPixelData,
)
from inference.instance_limits import check_declared_pixels, deflated_data_set_offset, read_deflated_header
from inference.records import InstanceHeaders
from inference.sop_classes import ACCEPTED_SOP_CLASSES, modality_for_sop_class

__all__ = [
    "read_instance_headers",
    "is_valid_uid",
    "uid_defect",
    "DEFAULT_CHARSET",
    "DEFAULT_REPERTOIRE",
    "declared_character_sets",
    "text_as_meant",
]

_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_valid_uid(value: str) -> bool:
    # UIDs become file names in the spool, so only the PS3.5 9.1 form is allowed.
    return uid_defect(value) is None


def _character(c: str) -> str:
    if c == "\x00":
        return "a NUL character (0x00)"
    if c.isalpha():
        return "a letter"
    if c == " ":
        return "a space"
    return "a control character" if not c.isprintable() else "a character other than a digit or '.'"


def uid_defect(value: str) -> str | None:
    """Which rule of PS3.5 9.1 ``value`` breaks, said without quoting it; None for a valid UID. A malformed UID can
    be anything a sender put there (a patient's name or ID in the wrong element), and the reason goes to the log,
    the quarantine's sidecar and ``GET /api/quarantine``, which ml-engineers read: it had quoted the value."""
    if not value:
        return "it is empty"
    if len(value) > 64:
        return "it is longer than the 64 characters a UID may have"
    wrong = next((i for i, c in enumerate(value) if c not in "0123456789."), None)
    if wrong is not None:
        return f"it holds {_character(value[wrong])} at position {wrong + 1}; a UID is digits and '.' only"
    components = value.split(".")
    if "" in components:
        return "it has an empty component (a '.' at its start or end, or two together)"
    if any(len(c) > 1 and c.startswith("0") for c in components):
        return "a component starts with 0 (only the component 0 itself may)"
    return None


def _padded(ds: FileDataset, keyword: str) -> str:
    """The value as sent, less the padding: DICOM pads UIDs (and some writers other values) with NUL."""
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip().strip("\x00").strip()


# The site's reading of undeclared 8-bit text (MEDSCREEN_DICOM_DEFAULT_CHARSET): Latin-1, as pydicom and Orthanc
# (DefaultEncoding) assume, and the code page most modalities that declare nothing write.
DEFAULT_CHARSET = "ISO_IR 100"
# Declarations that mean the 7-bit default repertoire (PS3.3 C.12.1.1.2): none, an empty value, ISO_IR 6. Bytes
# above 0x7F under them are outside the standard; a modality writing its local code page is why they are there.
DEFAULT_REPERTOIRE = ("", "ISO_IR 6", "ISO 2022 IR 6")
# Bytes 0x80-0x9F of ISO_IR 100 text are C1 controls in Latin-1, which no name or description means. Windows
# modalities label Windows-1252 text ISO_IR 100 and write Š, Ž, Œ, €, quotes and dashes there: those bytes are read
# as Windows-1252 where it defines a character (0x81, 0x8D, 0x8F, 0x90, 0x9D stay controls; the RIS feed makes
# every control a space).
_C1_AS_WINDOWS_1252 = str.maketrans(
    {chr(byte): bytes([byte]).decode("cp1252") for byte in range(0x80, 0xA0) if byte not in (0x81, 0x8D, 0x8F, 0x90, 0x9D)}
)


def declared_character_sets(ds: Dataset) -> list[str]:
    """Specific Character Set as a list of its values ([] when absent)."""
    declared = ds.get("SpecificCharacterSet")
    if declared is None:
        return []
    if isinstance(declared, list | tuple) or type(declared).__name__ == "MultiValue":
        return [str(value).strip() for value in declared]
    return [str(declared).strip()]


def text_as_meant(value: str, declared: list[str], default_charset: str = DEFAULT_CHARSET) -> str:
    """A text value as pydicom decoded it, read as the sender meant it. Under the default repertoire pydicom reads
    bytes above 0x7F as Latin-1; they are read in ``default_charset`` instead (the site's setting: UTF-8 or GBK
    modalities that declare nothing). In ISO_IR 100 text, declared or by default, bytes 0x80-0x9F are read as
    Windows-1252."""
    charset = declared[0] if len(declared) == 1 else ""
    if all(term in DEFAULT_REPERTOIRE for term in declared):
        charset = default_charset
        # pydicom's Latin-1 reading gives every byte back as it was (a value beyond U+00FF was set in memory, not
        # read: it is kept): those bytes are decoded as the site means them.
        if default_charset != "ISO_IR 100" and not value.isascii() and max(map(ord, value)) < 0x100:
            value = value.encode("latin-1").decode(python_encoding[default_charset], errors="replace")
    if charset == "ISO_IR 100":
        value = value.translate(_C1_AS_WINDOWS_1252)
    return value


def _text(ds: FileDataset, keyword: str) -> str:
    """Display text (descriptions, names, institution, dates, codes): a NUL inside carries no meaning in DICOM's
    character repertoires and PostgreSQL text cannot hold one (the instance had failed as a processing failure),
    so it is removed."""
    return _padded(ds, keyword).replace("\x00", "")


def _identifier(ds: FileDataset, keyword: str) -> str:
    """PatientID and AccessionNumber match a patient and an order in the RIS and the PACS: removing a NUL inside
    would make another identity, so an instance carrying one is refused (and quarantined) instead."""
    value = _padded(ds, keyword)
    if "\x00" in value:
        raise MissingAttribute(f"{keyword} holds a NUL character (0x00), which an identifier may not contain")
    return value


def _order_priority(ds: FileDataset) -> str:
    """RequestedProcedurePriority, at the top level or in the Request Attributes Sequence (the usual place)."""
    value = _text(ds, "RequestedProcedurePriority")
    if not value:
        for item in ds.get("RequestAttributesSequence", []) or []:
            value = _text(item, "RequestedProcedurePriority")
            if value:
                break
    return value.upper()[:16]


def _required_uid(ds: FileDataset, keyword: str) -> str:
    # Only the trailing NUL pad is removed: a NUL inside fails the UID form and the instance is refused.
    value = _padded(ds, keyword)
    if not value:
        raise MissingAttribute(f"{keyword} is missing or empty")
    defect = uid_defect(value)
    if defect is not None:
        raise MissingAttribute(f"{keyword} ({len(value)} characters) is not a valid DICOM UID: {defect}")
    return value


_DEFER_BYTES = 4096
# pydicom builds a Dataset for every sequence item it reads, about 700 bytes each even when empty, and cannot
# defer an undefined-length sequence: 10^6 empty items (an 8 MB file) cost 712 MB. An enhanced multi-frame
# image of 10,000 frames with about ten functional-group items each stays under this.
MAX_SEQUENCE_ITEMS = 250_000
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_NUMBER_OF_FRAMES = 0x00280008
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}


@dataclass
class _Container:
    """A sequence or item being walked: where it ends (None: at its delimiter), and how its elements are encoded."""

    end: int | None
    implicit: bool
    sequence: int  # the tag of the sequence it is, or is an item of
    item: bool = False


def _is_sequence_tag(tag: int) -> bool:
    try:
        return bool(dictionary_VR(tag) == "SQ")
    except KeyError:
        return False


def _refuse_large_structures(path: Path, transfer_syntax: str) -> None:
    """Count sequence items and pixel data fragments with one flat walk over tags and lengths, before pydicom
    builds an object for each: refused past :data:`MAX_SEQUENCE_ITEMS` items or ``codestream.fragment_limit``
    fragments. Memory is one entry per open sequence level; a layout the walk cannot follow is left to pydicom,
    whose own error then refuses the file."""
    implicit_base = transfer_syntax == ImplicitVRLittleEndian
    endian = ">" if transfer_syntax == ExplicitVRBigEndian else "<"
    size = path.stat().st_size
    with path.open("rb") as handle:
        handle.seek(deflated_data_set_offset(path)[0])
        try:
            _walk(handle, implicit_base, endian, size)
        except struct.error:
            return  # a file that ends inside an element: pydicom says so


def _walk(handle: BinaryIO, implicit_base: bool, endian: str, size: int) -> None:
    items, frames = 0, 1
    stack: list[_Container] = []
    while True:
        while stack and (ends := stack[-1].end) is not None and handle.tell() >= ends:
            stack.pop()
        implicit = stack[-1].implicit if stack else implicit_base
        head = handle.read(8)
        if len(head) < 8:
            return
        group, element = struct.unpack(f"{endian}HH", head[:4])
        tag = group << 16 | element
        if group == 0xFFFE:  # an item or a delimiter: no VR and a 4-byte length, in every encoding
            length = struct.unpack(f"{endian}L", head[4:])[0]
            if element == 0xE000 and stack:
                items += 1
                if items > MAX_SEQUENCE_ITEMS:
                    raise InstanceTooLarge(
                        f"the header holds more than {MAX_SEQUENCE_ITEMS:,} sequence items (sequence "
                        f"({stack[-1].sequence >> 16:04X},{stack[-1].sequence & 0xFFFF:04X}) among them)"
                    )
                end = None if length == _UNDEFINED else handle.tell() + length
                stack.append(_Container(end, implicit, stack[-1].sequence, item=True))
            elif element in (0xE00D, 0xE0DD):
                # An item delimiter closes the open undefined-length item, a sequence delimiter its sequence.
                closes_item = element == 0xE00D
                while stack:
                    closed = stack.pop()
                    if closed.end is None and closed.item == closes_item:
                        break
            continue
        if implicit:
            vr, length = b"", struct.unpack(f"{endian}L", head[4:])[0]
        else:
            vr = head[4:6]
            length = struct.unpack(f"{endian}L", handle.read(4))[0] if vr in _LONG_VRS else struct.unpack(
                f"{endian}H", head[6:])[0]
        if tag == _PIXEL_DATA and length == _UNDEFINED:  # encapsulated (an icon's too, inside a sequence)
            shown = frames if not stack else 1
            _skip_fragments(handle, endian, fragment_limit(shown, size - handle.tell()), shown)
        elif tag == _NUMBER_OF_FRAMES and not stack and length < 16:
            value = handle.read(length).strip(b" \x00")
            frames = int(value) if value.isdigit() else 1
        elif vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED) or (
            implicit and (length == _UNDEFINED or _is_sequence_tag(tag))
        ):
            # An undefined-length UN is a sequence encoded Implicit VR Little Endian (PS3.5 6.2.2).
            end = None if length == _UNDEFINED else handle.tell() + length
            stack.append(_Container(end, implicit or vr == b"UN", tag))
        elif length == _UNDEFINED:
            return  # a layout pydicom refuses too
        else:
            handle.seek(length, 1)


def _skip_fragments(handle: BinaryIO, endian: str, limit: int, frames: int) -> None:
    """Step over encapsulated pixel data, counting its fragments (``codestream`` checks them once read)."""
    count = 0
    while len(head := handle.read(8)) == 8:
        group, element, length = struct.unpack(f"{endian}HHL", head)
        if group != 0xFFFE or element != 0xE000 or length == _UNDEFINED:
            return
        count += 1
        if count > limit + 1:  # the basic offset table's item is not a fragment
            raise too_many_fragments(limit, frames)
        handle.seek(length, 1)


def _read_header(path: Path, max_bytes: int) -> FileDataset:
    transfer_syntax = str(read_file_meta_info(path).get("TransferSyntaxUID", ""))
    if transfer_syntax == DeflatedExplicitVRLittleEndian:
        # pydicom would inflate the whole data set in memory: inflate in bounded chunks instead.
        return read_deflated_header(path, max_bytes, _DEFER_BYTES)
    _refuse_large_structures(path, transfer_syntax)
    return dcmread(path, defer_size=_DEFER_BYTES)


def read_instance_headers(
    path: Path, max_bytes: int | None = None, *, default_charset: str = DEFAULT_CHARSET
) -> InstanceHeaders:
    """Parse the header of a DICOM Part 10 file at ``path`` without loading its pixels.

    ``max_bytes`` bounds the instance once inflated and its pixel data once decoded (see
    ``inference/instance_limits.py``); None checks only that the pixel data holds what it declares.
    ``default_charset`` (MEDSCREEN_DICOM_DEFAULT_CHARSET) reads 8-bit text of an instance that declares no
    character set (see :func:`text_as_meant`); identifiers are kept as pydicom reads them, since other systems'
    copies of them are matched byte for byte.
    """
    limit = max_bytes if max_bytes is not None else 1 << 62
    try:
        # Pixel data stays on disk (deferred); its presence is still visible in the dataset.
        ds = _read_header(path, limit)
        sop_class_uid = _required_uid(ds, "SOPClassUID")
        study_uid = _required_uid(ds, "StudyInstanceUID")
        series_uid = _required_uid(ds, "SeriesInstanceUID")
        sop_uid = _required_uid(ds, "SOPInstanceUID")
        transfer_syntax = str(ds.file_meta.get("TransferSyntaxUID", "")) if ds.file_meta else ""
        has_pixels = any(keyword in ds for keyword in _PIXEL_KEYWORDS)
        modality = _text(ds, "Modality")
        declared = declared_character_sets(ds)

        def text(keyword: str) -> str:
            return text_as_meant(_text(ds, keyword), declared, default_charset)

        headers = dict(
            body_part_examined=_text(ds, "BodyPartExamined"),
            study_description=text("StudyDescription"),
            series_description=text("SeriesDescription"),
            protocol_name=text("ProtocolName"),
            view_position=_text(ds, "ViewPosition"),
            laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
            patient_id=_identifier(ds, "PatientID"),
            patient_name=text("PatientName"),
            patient_sex=_text(ds, "PatientSex"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            accession_number=_identifier(ds, "AccessionNumber"),
            study_date=_text(ds, "StudyDate"),
            manufacturer=text("Manufacturer"),
            station_name=text("StationName"),
            institution_name=text("InstitutionName"),
            order_priority=_order_priority(ds),
        )
    except InvalidDicomError as exc:
        raise NotDicom(f"not a DICOM Part 10 file: {exc}") from exc
    except (MissingAttribute, InstanceTooLarge, CodestreamMismatch):
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes make the parser raise anything
        raise NotDicom(f"unreadable DICOM header: {type(exc).__name__}: {exc}") from exc

    # A SOP class medscreen does not score, or an image without pixels, is still valid DICOM: ingest
    # acknowledges it and records it as not scored (``inference/intake.py``), so a PACS batch never aborts.
    # Its pixels are never decoded nor kept, so what they declare is not checked either: a cine loop or an
    # endoscopy video declares gigabytes once decoded and had been refused 0xA700 (which a PACS retries).
    if has_pixels and sop_class_uid in ACCEPTED_SOP_CLASSES:
        deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
        try:
            check_declared_pixels(ds, limit, file_size=None if deflated else path.stat().st_size)
        except (InstanceTooLarge, TruncatedPixelData, CodestreamMismatch):
            raise
        except Exception as exc:  # noqa: BLE001 - a malformed pixel element makes pydicom raise anything
            raise NotDicom(f"unreadable pixel data element: {type(exc).__name__}: {exc}") from exc
    if not modality:
        modality = modality_for_sop_class(sop_class_uid) or ""
    return InstanceHeaders(
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
        sop_instance_uid=sop_uid,
        sop_class_uid=sop_class_uid,
        transfer_syntax_uid=transfer_syntax,
        modality=modality.upper(),
        has_pixel_data=has_pixels,
        **headers,
    )
