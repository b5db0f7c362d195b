"""A scoring worker process (spawned by ``medscreen serve``), dying with its parent."""

from __future__ import annotations

import threading
import warnings

from inference.champions import ModelSelector
from inference.receive.process import die_with_parent
from inference.worker import ScoringWorker
from service.db import make_engine, make_session_factory
from service.settings import Settings
from service.shutdown import stop_on_signals
from service.steering import defer_rules_from_settings

__all__ = ["build_worker", "run_scoring_process"]


def build_worker(settings: Settings) -> ScoringWorker:
    engine = make_engine(settings.resolved_database_url, serialise_writes=True)
    selector = ModelSelector(
        settings.resolved_mlflow_tracking_uri,
        settings.home / "model-cache",
        intra_op_threads=settings.ort_threads,
        refresh_s=settings.model_refresh_s,
        defer_rules=defer_rules_from_settings(settings),
    )
    return ScoringWorker(settings, make_session_factory(engine), selector)


def run_scoring_process(settings_json: str, log_level: str) -> None:
    die_with_parent()
    warnings.filterwarnings("ignore", module="pydicom")
    warnings.filterwarnings("ignore", module="highdicom")
    settings = Settings.model_validate_json(settings_json)
    worker = build_worker(settings)
    stop = threading.Event()
    stop_on_signals(stop)
    worker.run_until(stop)
