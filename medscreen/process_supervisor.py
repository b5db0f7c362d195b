"""The processes ``medscreen serve`` keeps running (DICOM receivers, scoring workers): restarted when one dies, with a
growing delay when one keeps dying, and their state for ``/healthz``.

A process that cannot start (its port held by another program, an unreadable model cache) had been restarted every
second for ever, each time a fresh interpreter and a traceback in the log, while ``/healthz`` said ok.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import SpawnProcess

from medscreen.logging_config import run_configured
from service.settings import Settings

__all__ = ["ProcessState", "ProcessSupervisor", "SHUTDOWN_GRACE_S"]

log = logging.getLogger(__name__)

# How long a supervised process may take to finish its current step after SIGTERM before it is killed.
SHUTDOWN_GRACE_S = 10.0
# The first restart after a process died; each further death within STABLE_S of its start doubles it, up to
# MAX_RESTART_DELAY_S (one restart, one interpreter start-up and one log line a minute at most).
RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 60.0
# A process that has run this long started well: its next death is restarted after RESTART_DELAY_S again.
STABLE_S = 60.0


def _run_supervised(target: Callable[[str, str], None], settings_json: str, log_level: str) -> None:
    """A supervised process: ``target`` (which stops on SIGTERM or SIGINT), then no stop signal is heeded.

    Once ``target`` has returned, the interpreter finalises, and Python sets the signals it handled back to their
    default before tearing down modules (onnxruntime, numpy, SQLAlchemy: seconds): a stop sent to the whole process
    group (systemd, Ctrl-C) reached the process, it stopped, and the supervisor's own SIGTERM in ``shutdown()`` then
    killed it mid-exit, logged as exit code -15. A signal it has ignored stays ignored to the end."""
    run_configured(target, settings_json, log_level)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@dataclass(frozen=True)
class ProcessState:
    """One supervised process as ``/healthz`` reports it. ``failing``: not running now, or it died within
    ``STABLE_S`` of its start and its replacement has not yet run that long."""

    name: str
    running: bool
    restarts: int
    last_exit_code: int | None
    failing: bool


@dataclass
class _Slot:
    process: SpawnProcess
    started_at: float
    restarts: int = 0
    quick_deaths: int = 0  # deaths in a row within STABLE_S of the start
    last_exit_code: int | None = None
    restart_at: float | None = None  # set while the slot waits out its delay


class ProcessSupervisor:
    """Keeps ``count`` processes running ``target(settings_json, log_level)``, restarting any that dies."""

    def __init__(
        self, settings: Settings, name: str, target: Callable[[str, str], None], count: int, *, allow_none: bool = False,
        restart_delay_s: float = RESTART_DELAY_S, max_restart_delay_s: float = MAX_RESTART_DELAY_S,
        stable_s: float = STABLE_S, poll_s: float = 1.0,
    ) -> None:
        self.settings = settings
        self.name = name
        self.target = target
        self.count = max(0 if allow_none else 1, count)
        self.restart_delay_s = restart_delay_s
        self.max_restart_delay_s = max_restart_delay_s
        self.stable_s = stable_s
        self.poll_s = poll_s
        self.context = multiprocessing.get_context("spawn")
        self.stop = threading.Event()
        self._slots: list[_Slot] = []
        # Held while the watcher looks at or restarts processes, and by status(): shutdown() sets ``stop`` under it,
        # so no process is started once shutdown has begun.
        self._lock = threading.Lock()
        self._released = threading.Event()  # set by shutdown() once every process has ended
        self._thread = threading.Thread(target=self._watch, name=f"{name}-supervisor", daemon=True)

    @property
    def processes(self) -> list[SpawnProcess]:
        return [slot.process for slot in self._slots]

    def _spawn(self, index: int) -> SpawnProcess:
        process = self.context.Process(
            target=_run_supervised,
            args=(self.target, self.settings.process_json(), self.settings.log_level),
            name=f"{self.name}-{index}",
            daemon=True,
        )
        process.start()
        return process

    def start(self) -> None:
        self._slots = [_Slot(self._spawn(i), time.monotonic()) for i in range(self.count)]
        self._thread.start()

    def _watch(self) -> None:
        while not self.stop.wait(self.poll_s):
            with self._lock:
                if self.stop.is_set():
                    break
                for index, slot in enumerate(self._slots):
                    self._look_after(index, slot, time.monotonic())
        # PR_SET_PDEATHSIG fires when the thread that started a process ends, not the process: the processes this
        # thread restarted would be SIGKILLed as it returned, before shutdown() gives them SIGTERM and their grace.
        self._released.wait()

    def _delay(self, quick_deaths: int) -> float:
        return min(self.max_restart_delay_s, self.restart_delay_s * 2 ** max(0, quick_deaths - 1))

    def _look_after(self, index: int, slot: _Slot, now: float) -> None:
        if slot.restart_at is not None:
            if now >= slot.restart_at:
                slot.process, slot.started_at, slot.restart_at = self._spawn(index), now, None
                slot.restarts += 1
            return
        ran = now - slot.started_at
        if slot.process.is_alive():
            if slot.quick_deaths and ran >= self.stable_s:
                log.info("%s has run %.0f s since its restart: it started well", slot.process.name, ran)
                slot.quick_deaths = 0
            return
        slot.last_exit_code = slot.process.exitcode
        slot.quick_deaths = slot.quick_deaths + 1 if ran < self.stable_s else 0
        delay = self._delay(slot.quick_deaths)
        slot.restart_at = now + delay
        # One line per death: with the delay doubling, a process that cannot start logs once a minute at most.
        in_a_row = f" ({slot.quick_deaths} deaths in a row at start)" if slot.quick_deaths > 1 else ""
        log.error(
            "%s exited with code %s after %.0f s; restarting it in %g s%s",
            slot.process.name, slot.last_exit_code, ran, delay, in_a_row,
        )

    def status(self) -> list[ProcessState]:
        with self._lock:
            return [
                ProcessState(
                    name=f"{self.name}-{index}",
                    running=slot.restart_at is None and slot.process.is_alive(),
                    restarts=slot.restarts,
                    last_exit_code=slot.last_exit_code,
                    failing=slot.restart_at is not None or not slot.process.is_alive() or slot.quick_deaths > 0,
                )
                for index, slot in enumerate(self._slots)
            ]

    def shutdown(self, grace_s: float = SHUTDOWN_GRACE_S) -> None:
        """SIGTERM to every process (each finishes its current step), then SIGKILL to any still running after
        ``grace_s``: a process blocked in a call that never returns must not keep the command from stopping, and a
        scoring job it held is taken over when its lease runs out."""
        with self._lock:  # the watcher starts no process from here on
            self.stop.set()
        processes = self.processes
        for process in processes:
            process.terminate()
        deadline = time.monotonic() + grace_s
        for process in processes:
            process.join(timeout=max(0.0, deadline - time.monotonic()))
        for process in processes:
            if process.is_alive():
                log.warning("%s did not stop within %.0f s of SIGTERM; killing it", process.name, grace_s)
                process.kill()
                process.join(timeout=5)
            if process.exitcode == -signal.SIGTERM:  # only before its stop handler is installed: still starting
                log.info("%s stopped by SIGTERM before it had finished starting (exit code %s)", process.name,
                         process.exitcode)
            else:
                log.info("%s stopped (exit code %s)", process.name, process.exitcode)
        self._released.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2.0)
