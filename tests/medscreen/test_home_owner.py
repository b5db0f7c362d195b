"""A home restored by root (`cp -r`, a tar or rsync without owners) for a service run as its own account: every
command stops with one line naming what belongs to whom and the chown that fixes it, exit code 2. It had been a
PermissionError traceback (the owner-only chmod at start, or SQLite's "attempt to write a readonly database")."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.file_modes import entries_of_other_accounts
from tests.conftest import REPO

pytestmark = pytest.mark.timeout(300)

NOBODY = 65534


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def test_entries_this_account_can_write_are_not_refused(tmp_path: Path) -> None:
    """Owned by another uid yet writable (an NFS export squashing every account to one): left alone."""
    (tmp_path / "medscreen.db").touch()
    (tmp_path / "spool").mkdir()
    other = os.geteuid() + 4242
    assert entries_of_other_accounts(tmp_path, euid=other) == []
    assert entries_of_other_accounts(tmp_path, euid=tmp_path.stat().st_uid) == []


@pytest.fixture
def home_of_root() -> Iterator[Path]:
    """A home made by root in a folder every account can reach (pytest's own is root's alone)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to run medscreen as another account")
    # In /tmp itself: a receiver tested in this process points tempfile's default at its own spool (root's alone).
    top = Path(tempfile.mkdtemp(prefix="medscreen-restored-", dir="/tmp"))
    top.chmod(0o755)
    home = top / "var"
    (home / "spool").mkdir(parents=True)
    (home / "medscreen.db").touch()
    # Readable by all whatever the umask: an app tested in this process set its owner-only one.
    for path in (home, home / "spool", home / "medscreen.db"):
        path.chmod(0o755)
    try:
        yield home
    finally:
        shutil.rmtree(top)


def test_a_home_of_another_account_stops_every_command_with_one_line(home_of_root: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDSCREEN_", "MLFLOW_"))}
    env.update(MEDSCREEN_HOME=str(home_of_root), HOME="/tmp", PYTHONPATH=str(REPO))
    for command in (["serve"], ["users", "list"]):
        result = subprocess.run(
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable,
             "-m", "medscreen", *command], cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
        )
        assert result.returncode == 2, result.stderr[-2000:]
        last = result.stderr.splitlines()[-1]
        assert last.startswith(f"medscreen {command[0]}: MEDSCREEN_HOME {home_of_root}: {home_of_root}, medscreen.db, "
                               "spool belong to root (uid 0)"), last
        assert f"chown -R {_name(NOBODY)} {home_of_root}" in last and "Traceback" not in result.stderr
    # A home of root's this account may not even list (0700): the home itself is named (it had been listdir's
    # traceback, seen in CI when the umask of an app tested in the same process made the home above 0700).
    home_of_root.chmod(0o700)
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "medscreen",
         "users", "list"], cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1].startswith(
        f"medscreen users: MEDSCREEN_HOME {home_of_root}: {home_of_root} belong to root (uid 0)")
    home_of_root.chmod(0o755)
    # A new home in a folder this account cannot write: one line too (it had been mkdir's traceback).
    env["MEDSCREEN_HOME"] = str(home_of_root.parent / "opt" / "var")
    (home_of_root.parent / "opt").mkdir()
    (home_of_root.parent / "opt").chmod(0o755)  # whatever the umask an app tested in this process left
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "medscreen",
         "serve"], cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"medscreen serve: MEDSCREEN_HOME {env['MEDSCREEN_HOME']} cannot be created by {_name(NOBODY)} (uid {NOBODY}): "
        f"Permission denied in {home_of_root.parent / 'opt'}; create it for this account (mkdir -p "
        f"{env['MEDSCREEN_HOME']}; chown {_name(NOBODY)} {env['MEDSCREEN_HOME']})"
    )
    # A home under a folder this account may not pass through (root's 0700): one line too (it had been stat's
    # PermissionError traceback, seen when the home above sat under pytest's own folder).
    closed = home_of_root.parent / "closed"
    closed.mkdir()
    closed.chmod(0o700)
    env["MEDSCREEN_HOME"] = str(closed / "var")
    result = subprocess.run(
        ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-m", "medscreen",
         "users", "list"], cwd="/tmp", env=env, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-2000:]
    assert result.stderr.splitlines()[-1] == (
        f"medscreen users: MEDSCREEN_HOME {closed / 'var'} cannot be reached by {_name(NOBODY)} (uid {NOBODY}): "
        f"{closed} (owned by root (uid 0)) does not let this account through; give it access (chmod o+x {closed}) "
        "or set MEDSCREEN_HOME to a folder it can reach"
    )
