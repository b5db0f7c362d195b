"""Everything under MEDSCREEN_HOME is owner-only: new files by umask, an older home tightened at start."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _group_or_other(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode) & (stat.S_IRWXG | stat.S_IRWXO)


def test_a_command_creates_owner_only_files_and_tightens_an_old_home(tmp_path: Path) -> None:
    home = tmp_path / "var"
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    old = home / "left-by-an-older-version.txt"
    old.write_text("x")
    old.chmod(0o644)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    env.update(MEDSCREEN_HOME=str(home), PYTHONPATH=str(REPO))
    result = subprocess.run(
        [sys.executable, "-m", "medscreen", "users", "add", "rita", "--role", "radiologist"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert _group_or_other(home) == 0 and _group_or_other(old) == 0
    created = [p for p in home.rglob("*")]
    assert any(p.name == "medscreen.db" for p in created)
    loose = [f"{p} {stat.filemode(p.stat().st_mode)}" for p in created if _group_or_other(p)]
    assert not loose, loose


def test_spawned_processes_inherit_the_umask(tmp_path: Path) -> None:
    script = (
        "from service.file_modes import owner_only_files; owner_only_files();"
        "import multiprocessing as mp, pathlib;"
        "p = mp.get_context('spawn').Process(target=pathlib.Path(r'%s').write_text, args=('x',)); p.start(); p.join()"
    ) % (tmp_path / "child.txt")
    subprocess.run([sys.executable, "-c", script], check=True, cwd=REPO, timeout=60)
    assert _group_or_other(tmp_path / "child.txt") == 0
