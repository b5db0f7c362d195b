"""The log of a background loop that may fail on every pass (a database outage): the first failure with its
traceback, then one line a minute with the count, then one line when a pass succeeds again.

Logged on every pass, an idle service's loops wrote 81 MB an hour of tracebacks while PostgreSQL was down (review 4,
infra D9); on a host whose logs share the spool's disk a long outage ended with the watermark refusing studies.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["LoopFailureLog", "SUMMARY_EVERY_S"]

# While a loop keeps failing, one line with the count this often.
SUMMARY_EVERY_S = 60.0


def _summary(exc: BaseException) -> str:
    """The error's type and the first line of its message (a driver's message runs to many lines)."""
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0][:300] if lines else ''}"


class LoopFailureLog:
    """Call :meth:`failed` in the loop's ``except`` and :meth:`succeeded` after a pass that went through.

    ``what`` names the pass in each line ("scoring pass", "ris feed pass"); ``clock`` is monotonic, so a step of
    the system clock neither hides the next summary nor floods.
    """

    def __init__(
        self, logger: logging.Logger, what: str, *, every_s: float = SUMMARY_EVERY_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.every_s = every_s
        self.clock = clock
        self.failures = 0
        self._since = 0.0
        self._reported_at = 0.0
        self._reported_count = 0

    def failed(self, exc: BaseException, retry_s: float | None = None) -> None:
        """One failed pass; ``retry_s``: when the loop tries again (said in the first line)."""
        now = self.clock()
        self.failures += 1
        if self.failures == 1:
            self._since = self._reported_at = now
            self._reported_count = 1
            again = "retrying" if retry_s is None else f"retrying in {retry_s:.1f} s"
            self.logger.error("%s failed; %s (while it keeps failing, one line a minute)", self.what, again, exc_info=exc)
            return
        if now - self._reported_at >= self.every_s:
            self.logger.error(
                "%s still failing: %d failed passes in %.0f s (%d since the last line); last error %s",
                self.what, self.failures, now - self._since, self.failures - self._reported_count, _summary(exc),
            )
            self._reported_at, self._reported_count = now, self.failures

    def succeeded(self) -> None:
        """A pass went through: says so once when it follows failures."""
        if self.failures:
            self.logger.warning(
                "%s recovered after %d failed passes in %.0f s", self.what, self.failures, self.clock() - self._since
            )
            self.failures = 0
