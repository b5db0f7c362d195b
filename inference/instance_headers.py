"""Read and validate the header of one received instance: the gate between the network and the spool.

Received bytes are untrusted: every check that can refuse an instance happens here, before it is
recorded, so that a refused instance never becomes part of a study. Only broken data is refused (not
DICOM, missing or malformed UIDs, an unreadable header); whether valid DICOM is scored is intake's call.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydicom import dcmread
from pydicom.dataset import FileDataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian

from inference.errors import (
    CodestreamMismatch,
    InstanceTooLarge,
    MissingAttribute,
    NotDicom,
    TruncatedPixelData,
)
from inference.instance_limits import check_declared_pixels, read_deflated_header
from inference.records import InstanceHeaders
from inference.sop_classes import modality_for_sop_class

__all__ = ["read_instance_headers", "is_valid_uid"]

_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")


def is_valid_uid(value: str) -> bool:
    # UIDs become file names in the spool, so only the PS3.5 9.1 form is allowed.
    return 0 < len(value) <= 64 and _UID.match(value) is not None


def _padded(ds: FileDataset, keyword: str) -> str:
    """The value as sent, less the padding: DICOM pads UIDs (and some writers other values) with NUL."""
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip().strip("\x00").strip()


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
    if not is_valid_uid(value):
        raise MissingAttribute(f"{keyword} {value[:80]!r} is not a valid DICOM UID")
    return value


_DEFER_BYTES = 4096


def _read_header(path: Path, max_bytes: int) -> FileDataset:
    if str(read_file_meta_info(path).get("TransferSyntaxUID", "")) == DeflatedExplicitVRLittleEndian:
        # pydicom would inflate the whole data set in memory: inflate in bounded chunks instead.
        return read_deflated_header(path, max_bytes, _DEFER_BYTES)
    return dcmread(path, defer_size=_DEFER_BYTES)


def read_instance_headers(path: Path, max_bytes: int | None = None) -> InstanceHeaders:
    """Parse the header of a DICOM Part 10 file at ``path`` without loading its pixels.

    ``max_bytes`` bounds the instance once inflated and its pixel data once decoded (see
    ``inference/instance_limits.py``); None checks only that the pixel data holds what it declares.
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
        headers = dict(
            body_part_examined=_text(ds, "BodyPartExamined"),
            study_description=_text(ds, "StudyDescription"),
            series_description=_text(ds, "SeriesDescription"),
            protocol_name=_text(ds, "ProtocolName"),
            view_position=_text(ds, "ViewPosition"),
            laterality=_text(ds, "ImageLaterality") or _text(ds, "Laterality"),
            patient_id=_identifier(ds, "PatientID"),
            patient_name=_text(ds, "PatientName"),
            patient_sex=_text(ds, "PatientSex"),
            patient_birth_date=_text(ds, "PatientBirthDate"),
            accession_number=_identifier(ds, "AccessionNumber"),
            study_date=_text(ds, "StudyDate"),
            manufacturer=_text(ds, "Manufacturer"),
            station_name=_text(ds, "StationName"),
            institution_name=_text(ds, "InstitutionName"),
            order_priority=_order_priority(ds),
        )
    except InvalidDicomError as exc:
        raise NotDicom(f"not a DICOM Part 10 file: {exc}") from exc
    except (MissingAttribute, InstanceTooLarge):
        raise
    except Exception as exc:  # noqa: BLE001 - untrusted bytes make the parser raise anything
        raise NotDicom(f"unreadable DICOM header: {type(exc).__name__}: {exc}") from exc

    # A SOP class medscreen does not score, or an image without pixels, is still valid DICOM: ingest
    # acknowledges it and records it as not scored (``inference/intake.py``), so a PACS batch never aborts.
    if has_pixels:
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
