"""Stopping a long-running loop on SIGTERM or SIGINT.

A handler must not call ``threading.Event.set()`` itself: Python runs handlers in the main thread between
bytecodes, and when the signal lands while that thread is inside ``event.wait(timeout)`` holding the
event's internal lock (on entering or leaving the wait), ``set()`` blocks on that same lock for ever. A
scoring process polling ``stop.wait(0.5)`` then never ends, and its parent hangs joining it (a clean-clone
CI run stopped a worker command this way). The handler hands ``set()`` to a short-lived thread, which
takes the lock once the main thread lets go of it.
"""

from __future__ import annotations

import signal
import threading

__all__ = ["stop_on_signals"]


def stop_on_signals(stop: threading.Event, signals: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGINT)) -> None:
    """Set ``stop`` when one of ``signals`` arrives (call from the main thread)."""

    def handler(signum: int, frame: object) -> None:
        threading.Thread(target=stop.set, name="stop-on-signal", daemon=True).start()

    for signum in signals:
        signal.signal(signum, handler)
