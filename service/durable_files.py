"""fsync of a file or a folder, so that what was written or renamed is on disk before anyone is told so.

Used by the spool (an instance is acknowledged only once on disk) and the model cache (a version renamed into place
is complete after a power cut)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["fsync_file", "fsync_dir"]


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
