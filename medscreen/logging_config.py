"""Logging for every medscreen entry point: the CLI, ``serve`` and the processes ``serve`` spawns.

One format (UTC timestamps, process name, logger name) to stderr. Chatty libraries are held at WARNING, and
Alembic's per-connection lines ("Context impl SQLiteImpl", "Will assume transactional DDL") are dropped on
every command, while the lines naming a migration it actually runs are kept.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

__all__ = ["configure_logging", "run_configured"]

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
# Libraries that log every association, request or registry call at INFO.
QUIET_LIBRARIES = ("pynetdicom", "mlflow", "urllib3", "httpx")


class _AppliedMigrationsOnly(logging.Filter):
    """Keeps Alembic's "Running upgrade a -> b" lines and drops its set-up chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith("Running ")


def configure_logging(level: str) -> None:
    """Configure the root logger of this process; where a host (pytest, say) already installed handlers, those stay."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT)
    logging.Formatter.converter = time.gmtime  # UTC timestamps in every log line
    if logging.getLogger().level > logging.DEBUG:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        migration_log = logging.getLogger("alembic.runtime.migration")
        if not any(isinstance(f, _AppliedMigrationsOnly) for f in migration_log.filters):
            migration_log.addFilter(_AppliedMigrationsOnly())


def run_configured(target: Callable[[str, str], None], settings_json: str, log_level: str) -> None:
    """Entry point of a process ``serve`` spawns: logging as in the parent, then ``target(settings_json, log_level)``."""
    configure_logging(log_level)
    target(settings_json, log_level)
