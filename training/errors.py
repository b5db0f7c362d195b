"""Errors of training, export and the model registry.

    TrainingError
    ├── ParityError          ONNX Runtime and PyTorch disagree beyond tolerance on the same input
    ├── PromotionRefused     the candidate's validation AUROC is below the champion's (use --force)
    ├── RegistryError        a model or version is missing, or lacks the tags promotion needs
    ├── GateRefused          the challenger fails the evaluation gate on this hospital's confirmed studies
    └── ExportError          a study cannot be exported for retraining (no files, unreadable DICOM)
"""

from __future__ import annotations

__all__ = ["TrainingError", "ParityError", "PromotionRefused", "RegistryError", "GateRefused", "ExportError"]


class TrainingError(Exception):
    """Base class of every error of the ``training`` package."""


class ParityError(TrainingError):
    """The exported ONNX model does not reproduce the PyTorch outputs."""


class PromotionRefused(TrainingError):
    """Promotion would replace a better champion."""


class RegistryError(TrainingError):
    """The registry lacks the model, version or tag asked for."""


class GateRefused(TrainingError):
    """The candidate does not pass the evaluation gate (too few confirmed studies, a class too rare, or a
    significant drop in sensitivity)."""


class ExportError(TrainingError):
    """A study cannot be written to the retraining export."""
