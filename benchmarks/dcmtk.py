"""dcmtk's network programs (storescu, storescp, echoscu, ...): Debian's, never pynetdicom's namesakes.

pynetdicom installs Python console scripts of the same names into the virtual environment's ``bin``; with the
environment activated (as the README suggests) they come first on ``PATH`` and take other options (no
``--fork``, no ``+tls``), so the benchmarks and tests that talk to real DICOM peers name dcmtk's program by
its full path.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["dcmtk", "have_dcmtk"]


def _is_python_script(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            first = file.readline(200)
    except OSError:
        return True
    return first.startswith(b"#!") and b"python" in first


def _find(tool: str) -> str | None:
    for folder in os.environ.get("PATH", os.defpath).split(os.pathsep):
        candidate = Path(folder or ".") / tool
        if candidate.is_file() and os.access(candidate, os.X_OK) and not _is_python_script(candidate):
            return str(candidate)
    return None


def dcmtk(tool: str) -> str:
    """Full path of dcmtk's ``tool`` on ``PATH``, skipping Python scripts of that name."""
    found = _find(tool)
    if found is None:
        raise FileNotFoundError(f"dcmtk's {tool} is not on PATH (Debian package dcmtk; make test installs it)")
    return found


def have_dcmtk() -> bool:
    return _find("storescu") is not None
