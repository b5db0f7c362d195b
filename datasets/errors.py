"""Errors raised while reading a source or preprocessing an image.

    DatasetError
    ├── UnreadableImage      the file is not an image we can decode (bad DICOM, no pixel data)
    ├── UnsupportedImage     decodable, but not an image this preprocessing handles (colour, 4-D)
    ├── LabelsError          a labels file (Info.txt, LIDC XML, CSV) is missing or malformed
    └── ExtractError         an EMR extract lacks a file or a column: the whole batch stops, naming it
"""

from __future__ import annotations

__all__ = ["DatasetError", "UnreadableImage", "UnsupportedImage", "LabelsError", "ExtractError"]


class DatasetError(Exception):
    """Base class of every error of the ``datasets`` package."""


class UnreadableImage(DatasetError):
    """The file cannot be decoded as an image."""


class UnsupportedImage(DatasetError):
    """The image decodes but its shape or photometry is not handled."""


class LabelsError(DatasetError):
    """A labels file is missing or cannot be parsed."""


class ExtractError(DatasetError):
    """An EMR extract misses a file or a column it needs; nothing of it can be screened faithfully."""
