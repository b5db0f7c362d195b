"""One ``medscreen serve`` per home: a lock on ``$MEDSCREEN_HOME/serve.lock`` held for the life of the service.

A second service started on a home another one uses (a manual ``make run`` beside the systemd unit, a copy of the
unit with another port) had run beside it: at start it deleted the partly received files of the first one's open
associations (``spool/incoming``), put the first one's running scoring jobs back in the queue (the same node), and
its receivers shared the DICOM port with the first one's (SO_REUSEPORT), so the PACS's associations were spread over
two services. The lock is the kernel's (``flock``): it goes with the process that holds it, however it ends, so a lock
file left by a killed service or restored from another machine's backup never stops a start.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path
from typing import IO

__all__ = ["HomeInUse", "hold_home", "LOCK_NAME"]

LOCK_NAME = "serve.lock"

log = logging.getLogger(__name__)


class HomeInUse(Exception):
    """Another ``medscreen serve`` holds this home."""


def hold_home(home: Path) -> IO[str]:
    """Lock ``home`` for this process; the open lock file, to be kept open while the service runs. ``HomeInUse``
    when another process holds it."""
    path = home / LOCK_NAME
    handle = os.fdopen(os.open(path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise HomeInUse(
            f"another medscreen serve (pid {holder}) is using {home}: stop it first, or give this one its own "
            f"MEDSCREEN_HOME (two services on one home delete each other's partly received files, take over each "
            f"other's scoring jobs and share the DICOM port)"
        ) from None
    except OSError as exc:
        # A file system without locks (some network shares): the service runs as before, unguarded.
        log.warning("cannot lock %s (%s): a second medscreen serve on this home would not be refused", path,
                    exc.strerror)
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle
