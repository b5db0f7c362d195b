"""A stop signal always stops the loop: the handler's ``Event.set()`` runs in a thread of its own. Called in the
handler itself it deadlocks when the signal lands while the main thread holds the event's lock inside
``wait(timeout)``; a naive handler hangs within about a hundred of these signals (measured), this one
gets through a thousand."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

LOOP = """
import random, signal, threading
from service.shutdown import stop_on_signals
for _ in range(1000):
    stop = threading.Event()
    stop_on_signals(stop, (signal.SIGALRM,))
    signal.setitimer(signal.ITIMER_REAL, random.uniform(0.0001, 0.003))
    while not stop.is_set():
        stop.wait(0.0002)  # a polling loop, as the scoring worker's
print("stopped 1000 times")
"""


def test_a_signal_during_a_polling_wait_always_stops_the_loop() -> None:
    done = subprocess.run([sys.executable, "-c", LOOP], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "stopped 1000 times"
