"""Errors of the worklist, drawn once here; ``worklist/api.py`` turns them into HTTP responses.

WorklistError
├── StudyNotOnWorklist      no worklist entry for this study (404)
├── ClaimConflict           another radiologist holds the study, or it was already read (409)
├── NotClaimedByYou         release or read without holding the claim (409)
└── InvalidRead             a final read that names no finding, or a task the study does not have (422)
"""

from __future__ import annotations

__all__ = ["WorklistError", "StudyNotOnWorklist", "ClaimConflict", "NotClaimedByYou", "InvalidRead"]


class WorklistError(Exception):
    """Base of the worklist's errors."""


class StudyNotOnWorklist(WorklistError):
    pass


class ClaimConflict(WorklistError):
    pass


class NotClaimedByYou(WorklistError):
    pass


class InvalidRead(WorklistError):
    pass
