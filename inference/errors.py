"""Errors of the inference pipeline, drawn once here.

    InferenceError
    ├── IngestError                 an instance was refused; it is quarantined with the reason
    │   ├── NotDicom                bytes that are not a DICOM dataset
    │   ├── MissingAttribute        a required UID or attribute is absent or malformed
    │   ├── NoPixelData             an image without pixel data
    │   ├── UnsupportedSopClass     a SOP class medscreen does not score
    │   ├── StudyMismatch           STOW-RS to /studies/{uid} with an instance of another study
    │   ├── PatientMismatch         an instance whose PatientID differs from its stored study's (kept aside)
    │   ├── InstanceTooLarge        larger than MEDSCREEN_MAX_INSTANCE_MB, received, inflated or declared
    │   ├── TruncatedPixelData      pixel data shorter than the image it declares, or an impossible image
    │   ├── CodestreamMismatch      a compressed frame whose codestream is unreadable or declares another image
    │   ├── DifferingDuplicate      a SOP Instance UID already stored with other bytes (kept aside, never over)
    │   └── OutOfResources          free disk under the watermark (nothing is written)
    ├── RoutingRulesError           the routing rules file is invalid
    ├── TlsConfigurationError       DICOM TLS certificate, key or CA missing or unreadable (stops the start)
    ├── BundleInvalid               a model's ONNX file is not the model its bundle.json describes (refused at
    │   │                           registration; at load it makes the version unavailable)
    │   └── OnnxUnreadable          ONNX Runtime cannot open the file (truncated or corrupt: a cut download too)
    ├── RegistryLost                the registry holds no version of a model this site has results of (a new,
    │                               empty store): the shipped models are not registered into it at start-up
    └── ScoringError                a scoring job did not produce a result this time
        ├── CouldNotScore           the study's input is unusable (no retry: the result says why)
        │   └── OutOfScope          outside the version's intended use (not scored; the result says why)
        ├── ModelUnavailable        no champion, or its ONNX file cannot be loaded (retried)
        ├── InstancesUnavailable    a remote worker could not fetch the study over WADO-RS (retried)
        ├── WritebackFailed         the PACS refused or could not be reached (the dispatcher retries the stored files)
        └── DocumentsNotBuilt       the SR or heat-map cannot be built from the source's header (no retry: the
                                    score is kept, the write-back recorded as failed with the reason)

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
    "PatientMismatch",
    "InstanceTooLarge",
    "TruncatedPixelData",
    "CodestreamMismatch",
    "DifferingDuplicate",
    "OutOfResources",
    "RoutingRulesError",
    "TlsConfigurationError",
    "BundleInvalid",
    "OnnxUnreadable",
    "RegistryLost",
    "ScoringError",
    "CouldNotScore",
    "OutOfScope",
    "ModelUnavailable",
    "InstancesUnavailable",
    "WritebackFailed",
    "DocumentsNotBuilt",
]


class InferenceError(Exception):
    """Base of every error raised by ``inference``."""


class IngestError(InferenceError):
    """An instance could not be accepted; ``reason`` is shown to the sender and kept with the quarantined file.

    ``sop_class_uid`` and ``sop_instance_uid`` name the refused instance when its header (or file meta) was
    read, so that a STOW-RS sender can tell which of its instances failed.
    """

    kind = "ingest-error"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sop_class_uid: str | None = None
        self.sop_instance_uid: str | None = None


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


class PatientMismatch(IngestError):
    kind = "patient-mismatch"


class InstanceTooLarge(IngestError):
    kind = "instance-too-large"


class TruncatedPixelData(IngestError):
    kind = "truncated-pixel-data"


class CodestreamMismatch(IngestError):
    kind = "codestream-mismatch"


class DifferingDuplicate(IngestError):
    kind = "differing-duplicate"


class OutOfResources(IngestError):
    kind = "out-of-resources"


class RoutingRulesError(InferenceError):
    """The routing rules file cannot be read or is not valid."""


class ScoringError(InferenceError):
    """A scoring job failed; ``reason`` is stored with the job or the result."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class CouldNotScore(ScoringError):
    """Bad input (undecodable pixels, too few slices, no laterality): recorded as a result, never retried."""


class OutOfScope(CouldNotScore):
    """The study is outside the population the model version was validated on; it is not scored."""


class ModelUnavailable(ScoringError):
    """The model for the task cannot be loaded now."""


class InstancesUnavailable(ScoringError):
    """The study's instances are neither at their recorded paths nor fetchable from the ingest node now."""


class WritebackFailed(ScoringError):
    """The result could not be written back to the PACS."""


class DocumentsNotBuilt(ScoringError):
    """The SR or heat-map could not be built (a source header the DICOM libraries refuse); the score stands."""


class TlsConfigurationError(InferenceError):
    """The DICOM TLS settings cannot be used; raised at start-up, never half-way through an association."""


class BundleInvalid(InferenceError):
    """A model bundle whose ONNX file cannot serve the contract of its ``bundle.json`` (``inference.model_contract``)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class OnnxUnreadable(BundleInvalid):
    """ONNX Runtime cannot open the model file: a corrupt file, or a download cut short (then fetched again)."""


class RegistryLost(InferenceError):
    """The model registry holds no version of a model whose results this site's database holds."""
