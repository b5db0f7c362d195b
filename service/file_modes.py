"""Owner-only files under ``MEDSCREEN_HOME``: the database (patients, password hashes), its WAL, stored
instances, results and quarantined files are readable by the service's account only.

Every entry point sets the umask to 077 before it creates anything, so new files are 0600 and new folders
0700, in this process and in every process it spawns (receivers, workers inherit the umask). A home made by
an older version is tightened at start: the home folder itself becomes 0700, which alone stops other local
users from reaching anything below it, and its direct entries lose their group and other bits.
"""

from __future__ import annotations

import logging
import os
import stat
from pathlib import Path

__all__ = ["OWNER_ONLY_UMASK", "owner_only_files", "tighten_home", "entries_of_other_accounts"]

log = logging.getLogger(__name__)

OWNER_ONLY_UMASK = 0o077


def owner_only_files() -> None:
    """Make every file and folder this process (and its children) creates owner-only."""
    os.umask(OWNER_ONLY_UMASK)


def entries_of_other_accounts(home: Path, euid: int | None = None) -> list[tuple[Path, int]]:
    """``home`` and its direct entries that belong to another account than this process's and that it cannot write
    (none for root), with their owner: a home restored by root (``cp -r``, a tar or rsync without owners) for a service
    run by its own account. The start had ended in a PermissionError traceback (``tighten_home``'s chmod, or SQLite's
    "attempt to write a readonly database"), exit code 1. An entry this account can write although another owns it
    (an NFS export squashing every account to one) is not one of them."""
    euid = os.geteuid() if euid is None else euid
    if euid == 0 or not home.is_dir():
        return []
    found = []
    entries = [home]
    try:
        entries += sorted(home.iterdir())
    except PermissionError:
        pass  # a home this account may not even list (root's 0700): the home itself is what is named
    for path in entries:
        try:
            owner = path.lstat().st_uid
        except FileNotFoundError:
            continue
        if owner != euid and not path.is_symlink() and not os.access(path, os.W_OK):
            found.append((path, owner))
    return found


def tighten_home(home: Path) -> int:
    """Remove group and other permissions from ``home`` and its direct entries; returns how many changed."""
    if not home.is_dir():
        return 0
    changed = 0
    for path in (home, *home.iterdir()):
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(mode) or not mode & (stat.S_IRWXG | stat.S_IRWXO):
            continue
        path.chmod(stat.S_IMODE(mode) & ~(stat.S_IRWXG | stat.S_IRWXO))
        changed += 1
    if changed:
        log.info("made %d entries of %s owner-only", changed, home)
    return changed
