"""A site that pulls a newer release into an install made before the command moved (`service.cli:main` in its
console script) is told to re-install, in one line, exit code 2; it had been `ModuleNotFoundError: service.cli`."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_an_install_from_before_the_command_moved_says_how_to_refresh_it() -> None:
    # What pip wrote into .venv/bin/medscreen at a release whose [project.scripts] said service.cli:main.
    script = "import sys\nfrom service.cli import main\nsys.exit(main())\n"
    run = subprocess.run([sys.executable, "-c", script, "serve"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and "run `make run` once" in run.stderr and "Traceback" not in run.stderr
