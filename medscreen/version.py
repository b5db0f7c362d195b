"""The release of medscreen, as ``medscreen --version`` and the API's OpenAPI document give it."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import medscreen

__all__ = ["installed_version"]


def installed_version() -> str:
    """The installed distribution's version (pyproject.toml's at install), else the package's ``__version__``."""
    try:
        return version("medscreen")
    except PackageNotFoundError:
        return medscreen.__version__
