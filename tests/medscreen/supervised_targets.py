"""Targets for supervised processes in the tests, in a module of their own: a spawned process imports its target's
module, and this one imports next to nothing, so a restart costs a fraction of a second.

Each writes the time it started to ``<home>/starts`` (the home from the settings JSON it is given)."""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from pathlib import Path


def _record_start(settings_json: str) -> int:
    """Append this start's time; returns how many starts there have been."""
    starts = Path(json.loads(settings_json)["home"]) / "starts"
    with starts.open("a") as out:
        out.write(f"{time.time()}\n")
    return len(starts.read_text().splitlines())


def start_times(home: Path) -> list[float]:
    starts = home / "starts"
    return [float(line) for line in starts.read_text().splitlines()] if starts.exists() else []


def crash_at_start(settings_json: str, log_level: str) -> None:
    """A process that cannot start (its port held by another program, say)."""
    _record_start(settings_json)
    sys.exit(1)


def crash_twice_then_run(settings_json: str, log_level: str) -> None:
    """Dies at its first two starts, then runs until SIGTERM."""
    if _record_start(settings_json) <= 2:
        sys.exit(1)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: threading.Thread(target=stop.set).start())
    stop.wait()


def run_until_sigterm_dying_with_parent(settings_json: str, log_level: str) -> None:
    """As a receiver or scoring process: PR_SET_PDEATHSIG, then a loop that SIGTERM ends (exit code 0)."""
    from inference.receive.process import die_with_parent
    from service.shutdown import stop_on_signals

    die_with_parent()
    _record_start(settings_json)
    stop = threading.Event()
    stop_on_signals(stop)
    stop.wait()


class _SlowToFinalise:
    """Held in a module global: cleared during interpreter finalisation, after Python has given the signals back
    to their defaults, where it writes ``finalising`` and takes ``seconds`` (as tearing down onnxruntime does)."""

    def __init__(self, marker: Path, seconds: float) -> None:
        self.marker, self.seconds, self.sleep = marker, seconds, time.sleep

    def __del__(self) -> None:
        self.marker.write_text("finalising")
        self.sleep(self.seconds)


_LINGER: _SlowToFinalise | None = None


def stop_on_sigterm_then_finalise_slowly(settings_json: str, log_level: str) -> None:
    """As a receiver or scoring process (stops on SIGTERM, exit code 0), with a slow interpreter exit."""
    global _LINGER
    from service.shutdown import stop_on_signals

    _record_start(settings_json)
    _LINGER = _SlowToFinalise(Path(json.loads(settings_json)["home"]) / "finalising", 3.0)
    stop = threading.Event()
    stop_on_signals(stop)
    stop.wait()
