"""Errors of training, export and the model registry (the evaluation gate's are in ``quality.errors``).

    TrainingError
    ├── TrainingInputError   the --data folder is missing, empty or not laid out as the task reads it, or an
    │                        option the task cannot honour (ct-chest's --folds): the command line's usage error
    ├── ParityError          ONNX Runtime and PyTorch disagree beyond tolerance on the same input
    ├── PromotionRefused     the candidate's validation AUROC is below the champion's (use --force)
    ├── RegistryError        a model or version is missing, or lacks the tags promotion needs
    └── ExportError          a study cannot be exported for retraining (no files, unreadable DICOM)
"""

from __future__ import annotations

__all__ = ["TrainingError", "TrainingInputError", "ParityError", "PromotionRefused", "RegistryError", "ExportError"]


class TrainingError(Exception):
    """Base class of every error of the ``training`` package."""


class TrainingInputError(TrainingError):
    """What the operator gave cannot be trained on; the message names the path or option and what was expected."""


class ParityError(TrainingError):
    """The exported ONNX model does not reproduce the PyTorch outputs."""


class PromotionRefused(TrainingError):
    """Promotion would replace a better champion."""


class RegistryError(TrainingError):
    """The registry lacks the model, version or tag asked for."""


class ExportError(TrainingError):
    """A study cannot be written to the retraining export."""
