"""Where the ``medscreen`` console script pointed before the command moved to ``medscreen/cli.py``: a site that
pulled a newer release without re-installing runs this, and is told what to do in one line instead of a
``ModuleNotFoundError``."""

from __future__ import annotations

import sys
from collections.abc import Sequence

__all__ = ["main"]

REINSTALL = (
    "medscreen: this install predates the release in this folder (its `medscreen` command still points at "
    "service.cli): run `make run` once, or `.venv/bin/pip install -e .`, to refresh it (README, Upgrading)\n"
)


def main(argv: Sequence[str] | None = None) -> int:
    sys.stderr.write(REINSTALL)
    return 2
