"""The one place where ingest errors become DICOM status codes (PS3.4 Annex B, PS3.7 Annex C)."""

from __future__ import annotations

from inference.errors import (
    CodestreamMismatch,
    DifferingDuplicate,
    IngestError,
    InstanceTooLarge,
    MissingAttribute,
    NoPixelData,
    NotDicom,
    OutOfResources,
    PatientMismatch,
    StudyMismatch,
    TruncatedPixelData,
    UnsupportedSopClass,
)

__all__ = ["SUCCESS", "PROCESSING_FAILURE", "dicom_status_for"]

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
_STATUS = {
    OutOfResources: 0xA700,  # Refused: Out of Resources
    InstanceTooLarge: 0xA700,
    UnsupportedSopClass: 0x0122,  # Refused: SOP Class not supported
    MissingAttribute: 0xA900,  # Error: Data Set does not match SOP Class
    NoPixelData: 0xA900,
    StudyMismatch: 0xA900,
    # Another patient's image must not join (and re-open, re-score) a study: refused, kept aside.
    PatientMismatch: 0xA900,
    TruncatedPixelData: 0xA900,
    CodestreamMismatch: 0xA900,
    # PS3.7 C.4.2 general failure "Duplicate SOP Instance": the first copy stays, this one is kept aside.
    DifferingDuplicate: 0x0111,
    NotDicom: 0xC000,  # Error: Cannot understand
}


def dicom_status_for(error: IngestError) -> int:
    for error_type, status in _STATUS.items():
        if isinstance(error, error_type):
            return status
    return PROCESSING_FAILURE
