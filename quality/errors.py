"""Errors of quality review: the evaluation gate and the registry actions it takes.

    QualityError
    ├── GateRefused      the challenger fails the evaluation gate on this hospital's confirmed studies
    └── RegistryError    the registry lacks the model, version or alias a comparison, promotion or rollback needs
"""

from __future__ import annotations

__all__ = ["QualityError", "GateRefused", "RegistryError"]


class QualityError(Exception):
    """Base class of every error of the ``quality`` package."""


class GateRefused(QualityError):
    """The candidate does not pass the evaluation gate (too few confirmed studies, a class too rare, or a
    significant drop in sensitivity)."""


class RegistryError(QualityError):
    """The registry (or the stored results) lacks the model, version or alias asked for."""
