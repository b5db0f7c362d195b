"""Background loops during a database outage: the first failure with its traceback, one line a minute while it lasts,
one line when it ends (review 4, infra D9: 81 MB of tracebacks an hour from an idle service)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import sessionmaker

import worklist.recompute
from inference.complete import CompletenessMonitor
from inference.route import load_rules
from inference.worker import ScoringWorker
from medscreen.schema import migrate_all
from service.db import make_engine, make_session_factory
from service.loop_log import LoopFailureLog
from service.outbox import RetryPolicy, run_feed
from service.settings import Settings
from worklist.recompute import run_worklist_recompute


def test_a_failing_loop_logs_its_traceback_once_then_a_line_a_minute_then_recovered(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    clock = [100.0]
    failures = LoopFailureLog(logging.getLogger("test.loop"), "test pass", clock=lambda: clock[0])
    for second in range(0, 150):  # a pass a second for 150 s
        clock[0] = 100.0 + second
        failures.failed(ConnectionError(f"connection refused\nattempt {second}"), 1.0)
    records = [r for r in caplog.records if r.name == "test.loop"]
    assert [r.exc_info is not None for r in records] == [True, False, False]
    assert records[0].getMessage() == "test pass failed; retrying in 1.0 s (while it keeps failing, one line a minute)"
    assert records[1].getMessage() == (
        "test pass still failing: 61 failed passes in 60 s (60 since the last line); "
        "last error ConnectionError: connection refused"
    )
    assert "121 failed passes in 120 s" in records[2].getMessage()
    failures.succeeded()
    failures.succeeded()
    assert caplog.records[-1].getMessage() == "test pass recovered after 150 failed passes in 149 s"
    assert len([r for r in caplog.records if r.name == "test.loop"]) == 4
    failures.failed(ConnectionError("again"))  # a new outage: its first failure with the traceback again
    assert caplog.records[-1].exc_info is not None


class _Outage:
    """A session factory whose database cannot be opened until :meth:`end`; counts the sessions asked for."""

    def __init__(self, working: sessionmaker) -> None:
        self.working = working
        self.broken = sessionmaker(create_engine("sqlite:////nonexistent/medscreen/outage.db"))
        self.down = True
        self.calls = 0

    def __call__(self):
        self.calls += 1
        return (self.broken if self.down else self.working)()

    def end(self) -> None:
        self.down = False


def _until(condition: Callable[[], bool], deadline_s: float = 60.0) -> None:  # bounds a hang only
    end = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.fixture
def outage(settings: Settings) -> _Outage:
    settings.home.mkdir(parents=True, exist_ok=True)
    migrate_all(settings.resolved_database_url)
    return _Outage(make_session_factory(make_engine(settings.resolved_database_url)))


class _NoRegistry:
    def refresh(self, force: bool = False) -> dict:
        return {}


def _loops(settings: Settings, outage: _Outage) -> dict[str, Callable[[threading.Event], None]]:
    fast = settings.model_copy(update={"completeness_poll_s": 0.01, "worklist_recompute_s": 0.01, "scoring_poll_s": 0.01})
    return {
        "inference.complete": CompletenessMonitor(fast, outage, load_rules()).run_until,  # type: ignore[arg-type]
        "inference.worker": ScoringWorker(fast, outage, _NoRegistry()).run_until,  # type: ignore[arg-type]
        "worklist.recompute": lambda stop: run_worklist_recompute(fast, outage, stop),  # type: ignore[arg-type]
        "service.outbox": lambda stop: run_feed(
            "ris", "ris", [], lambda message: "sent", RetryPolicy(retry_s=1.0, max_attempts=3), outage, stop, 0.01  # type: ignore[arg-type]
        ),
    }


@pytest.mark.parametrize("logger", ["inference.complete", "inference.worker", "worklist.recompute", "service.outbox"])
def test_each_background_loop_logs_an_outage_once_and_its_end(
    logger: str, settings: Settings, outage: _Outage, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worklist.recompute, "serving_rights", lambda *args: None)  # no MLflow store in this test
    caplog.set_level(logging.INFO)
    stop = threading.Event()
    loop = threading.Thread(target=_loops(settings, outage)[logger], args=(stop,), daemon=True)
    loop.start()
    try:
        # The worker sleeps 1 s after a failed scoring pass; the others fail every 10 ms.
        _until(lambda: outage.calls >= (2 if logger == "inference.worker" else 20))
        outage.end()
        _until(lambda: any("recovered" in r.getMessage() for r in caplog.records if r.name == logger))
    finally:
        stop.set()
        loop.join(timeout=10)
    records = [r for r in caplog.records if r.name == logger and r.levelno >= logging.WARNING]
    tracebacks = [r.getMessage() for r in records if r.exc_info is not None]
    # One traceback per kind of pass (the worker has two: scoring and dispatch), whatever the number of passes.
    assert 1 <= len(tracebacks) == len(set(tracebacks)) <= 2
    assert all("recovered after" in r.getMessage() for r in records if r.exc_info is None)
    assert "unable to open database file" in caplog.text
