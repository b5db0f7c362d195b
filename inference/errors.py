"""Errors of the inference pipeline, drawn once here.

    InferenceError
    ├── IngestError                 an instance was refused; it is quarantined with the reason
    │   ├── NotDicom                bytes that are not a DICOM dataset
    │   ├── MissingAttribute        a required UID or attribute is absent or malformed
    │   ├── NoPixelData             an image without pixel data
    │   ├── UnsupportedSopClass     a SOP class medscreen does not score
    │   ├── StudyMismatch           STOW-RS to /studies/{uid} with an instance of another study
    │   ├── InstanceTooLarge        larger than MEDSCREEN_MAX_INSTANCE_MB
    │   └── OutOfResources          free disk under the watermark (nothing is written)
    └── RoutingRulesError           the routing rules file is invalid

The DICOM status of each is decided in one place, ``inference/receive/status.py``; the HTTP
failure reason of STOW-RS in ``inference/receive/stowrs.py``.
"""

from __future__ import annotations

__all__ = [
    "InferenceError",
    "IngestError",
    "NotDicom",
    "MissingAttribute",
    "NoPixelData",
    "UnsupportedSopClass",
    "StudyMismatch",
    "InstanceTooLarge",
    "OutOfResources",
    "RoutingRulesError",
]


class InferenceError(Exception):
    """Base of every error raised by ``inference``."""


class IngestError(InferenceError):
    """An instance could not be accepted; ``reason`` is shown to the sender and kept with the quarantined file."""

    kind = "ingest-error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NotDicom(IngestError):
    kind = "not-dicom"


class MissingAttribute(IngestError):
    kind = "missing-attribute"


class NoPixelData(IngestError):
    kind = "no-pixel-data"


class UnsupportedSopClass(IngestError):
    kind = "unsupported-sop-class"


class StudyMismatch(IngestError):
    kind = "study-mismatch"


class InstanceTooLarge(IngestError):
    kind = "instance-too-large"


class OutOfResources(IngestError):
    kind = "out-of-resources"


class RoutingRulesError(InferenceError):
    """The routing rules file cannot be read or is not valid."""
