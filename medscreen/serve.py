"""``medscreen serve``: the HTTP API, DICOM receiver and scoring worker processes and the completeness monitor, in one command.

Start-up order: schema migrations, the first admin (password printed once), the receivers, the shipped models
registered in an empty MLflow registry (in the background, retried until the registry answers), the monitor and
finally the HTTP server. Receiver processes die with the parent (PR_SET_PDEATHSIG), so a killed service never
leaves an orphan listening on the port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator
from functools import partial

import uvicorn
from sqlalchemy.orm import Session, sessionmaker

from inference.champions import ChampionWatch, ModelSelector
from inference.complete import CompletenessMonitor
from inference.fhir_feed import FHIR_CHANNEL, take_in_fhir_results
from inference.jobs import release_dead_leases
from inference.pacs_count import counter_from_settings
from inference.receive.process import run_receiver_process
from inference.retention import run_retention_loop
from inference.route import load_rules
from inference.spool import Spool
from inference.spool_node import spool_node
from inference.spool_relocation import relocate_recorded_paths
from inference.tls import pacs_tls_args, receiver_ssl_context
from inference.worker import running_node
from inference.worker_process import run_scoring_process
from medscreen.app import create_app
from medscreen.home_lock import hold_home
from medscreen.listen_ports import check_ports_free
from medscreen.process_supervisor import ProcessSupervisor
from medscreen.schema import migrate_all
from screening.fhir_feed import take_in_screening_flags
from service.db import make_engine, make_session_factory, session_scope, utcnow
from service.fhir_push import FhirSender
from service.http_server import http_config
from service.outbox import RetryPolicy, run_feed
from service.registry_relocation import relocate_artifact_root
from service.settings import Settings
from service.steering import defer_rules_from_settings
from service.users import ensure_admin, write_initial_admin_password
from worklist.recompute import run_worklist_recompute
from worklist.ris_feed import run_ris_feed

__all__ = ["run_service", "ProcessSupervisor"]

log = logging.getLogger(__name__)


class _HttpServer(uvicorn.Server):
    """uvicorn's server, except that a stop signal (SIGTERM, SIGINT) only ends ``run()``. uvicorn restores the default
    handler after its own shutdown and raises the captured signal again: for SIGTERM (``kill``, ``docker stop``,
    systemd) that killed the service before ``run_service`` stopped anything, so receivers and scoring workers were
    SIGKILLed by PR_SET_PDEATHSIG mid-step, with no grace, and the exit code was 143."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            yield
            return
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            # A second signal during the shutdown that follows stops the service at once, as before.
            for sig, handler in original.items():
                signal.signal(sig, handler)


def _register_shipped_models(settings: Settings) -> None:
    from inference.shipped_models import register_shipped_bundles, scored_models

    # The site's MEDSCREEN_STEERING_DEFER_* decide what a bundle's evidence earns, as in every other path.
    rules = defer_rules_from_settings(settings)
    for registered in register_shipped_bundles(settings.resolved_mlflow_tracking_uri, rules=rules,
                                               scored=scored_models(settings.resolved_database_url)):
        log.info("model registry: %s", registered)


def _champion_watch(settings: Settings) -> ChampionWatch:
    """Registers the shipped models (retried until it succeeds), then checks each task's champion, for /healthz."""
    selector = ModelSelector(
        settings.resolved_mlflow_tracking_uri, settings.home / "model-cache", intra_op_threads=1,
        refresh_s=settings.model_refresh_s, defer_rules=defer_rules_from_settings(settings),
    )
    return ChampionWatch(selector, register=partial(_register_shipped_models, settings), interval_s=settings.model_refresh_s)


def _run_fhir_feed(settings: Settings, session_factory: sessionmaker[Session], stop_event: threading.Event) -> None:
    """Champion results and screening flags to the EMR as FHIR transaction Bundles."""
    assert settings.fhir_push_url
    token = settings.fhir_push_token.get_secret_value() if settings.fhir_push_token else None
    sender = FhirSender(settings.fhir_push_url, token=token, timeout_s=settings.fhir_timeout_s)
    try:
        run_feed(
            "EMR (FHIR)", FHIR_CHANNEL,
            [partial(take_in_fhir_results, include_shadow=settings.writeback_shadow), take_in_screening_flags], sender,
            RetryPolicy(retry_s=settings.fhir_retry_s, max_attempts=settings.fhir_max_attempts),
            session_factory, stop_event, settings.outbox_poll_s,
        )
    finally:
        sender.close()


def run_service(settings: Settings) -> int:
    settings.home.mkdir(parents=True, exist_ok=True)
    # Before anything in the home is touched: another service using it is left alone (HomeInUse, exit code 2).
    with hold_home(settings.home):
        check_ports_free(settings)
        return _run_service(settings)


def _run_service(settings: Settings) -> int:
    url = settings.resolved_database_url
    migrate_all(url)
    session_factory = make_session_factory(make_engine(url, serialise_writes=True))
    password = ensure_admin(session_factory)
    if password is not None:
        # stderr is the log stream (journald, a log collector): the password goes to an owner-only file instead.
        path = write_initial_admin_password(settings.home, password)
        sys.stderr.write(
            "\n"
            "  First start: created user 'admin'; its password is in\n"
            f"      {path}\n"
            "  (readable by this account only). Log in, create the other users (medscreen users add ...),\n"
            "  then delete that file.\n\n"
        )
        sys.stderr.flush()
    spool = Spool(settings.spool_dir, settings.quarantine_dir)
    # A home restored on another path (a new server): the paths the database recorded follow it.
    relocate_recorded_paths(session_factory, spool.studies, spool.quarantine)
    spool.clear_incoming()
    log.info("node %s: result documents in %s", spool_node(settings), settings.spool_dir.resolve())
    # A TLS setting that cannot work stops the start here, not a receiver process in a restart loop.
    receiver_ssl_context(settings)
    pacs_tls_args(settings)

    receivers = ProcessSupervisor(settings, "dicom-receiver", run_receiver_process, settings.dicom_receivers)
    receivers.start()
    # Ingest runs even when the model registry is unavailable: the shipped models are registered in the background,
    # after the receivers started, and retried until the registry answers (a study waits `routed` meanwhile, and
    # /healthz names each task with no loadable champion). They had been registered before the receivers started,
    # once: a tracking server not up yet (compose or systemd start order) kept the DICOM port closed for about
    # 4.5 minutes, while MLflow's client retried, and on a first start no model was ever registered.
    # A home restored on another path: MLflow's recorded artifact locations follow it before any model is read.
    relocate_artifact_root(settings.resolved_mlflow_tracking_uri)
    champions = _champion_watch(settings)
    stop_champions = threading.Event()
    champion_thread = threading.Thread(target=champions.run_until, args=(stop_champions,), name="champions", daemon=True)
    champion_thread.start()
    # This node's workers of the previous run are gone: their running jobs go back to the queue now, not when
    # their leases run out (other nodes' live workers, on this machine or another, keep theirs).
    with session_scope(session_factory) as session:
        released = release_dead_leases(
            session, os.uname().nodename, utcnow(), starting_node=running_node(settings),
            max_attempts=settings.scoring_max_attempts, base_s=settings.scoring_retry_base_s,
        )
    if released:
        log.info("requeued %d scoring jobs left running by the previous run", released)
    # 0: an ingest node whose scoring (queueing, scoring, dispatching) is all on `medscreen worker` machines.
    scorers = ProcessSupervisor(settings, "scoring-worker", run_scoring_process, settings.scoring_workers, allow_none=True)
    scorers.start()
    monitor = CompletenessMonitor(settings, session_factory, load_rules(settings.routes_file), counter_from_settings(settings))
    stop_monitor = threading.Event()
    monitor_thread = threading.Thread(target=monitor.run_until, args=(stop_monitor,), name="completeness", daemon=True)
    monitor_thread.start()

    # The retention cleaner (inference/retention.py): files past their time go, each removal audited.
    stop_retention = threading.Event()
    retention_thread = threading.Thread(
        target=run_retention_loop, args=(settings, session_factory, stop_retention), name="retention", daemon=True
    )
    retention_thread.start()

    stop_worklist = threading.Event()
    worklist_thread = threading.Thread(
        target=run_worklist_recompute, args=(settings, session_factory, stop_worklist), name="worklist", daemon=True
    )
    worklist_thread.start()

    # Peers fed from the outbox, each in its own thread so that a slow RIS never holds up the worklist.
    feeds: list[threading.Thread] = []
    stop_feeds = threading.Event()
    if settings.ris_host and settings.ris_port:
        feeds.append(threading.Thread(
            target=run_ris_feed, args=(settings, session_factory, stop_feeds), name="ris-feed", daemon=True
        ))
    if settings.fhir_push_url:
        feeds.append(threading.Thread(
            target=_run_fhir_feed, args=(settings, session_factory, stop_feeds), name="fhir-feed", daemon=True
        ))
    for feed in feeds:
        feed.start()

    # /healthz answers 503 "degraded" while a receiver or scoring process is down or keeps dying at start, a task has
    # no loadable champion, the disk is under the watermark or the spool cannot be written.
    app = create_app(settings, run_migrations=False, process_states=lambda: receivers.status() + scorers.status(),
                     champion_problems=champions.problems)
    log.info(
        "medscreen serving HTTP on http://%s:%d and DICOM %s on %s:%d (data in %s)",
        settings.http_host,
        settings.http_port,
        settings.dicom_ae_title,
        settings.dicom_host,
        settings.dicom_port,
        settings.home.resolve(),
    )
    try:
        _HttpServer(http_config(app, settings)).run()
    finally:
        stop_monitor.set()
        stop_champions.set()
        stop_worklist.set()
        stop_retention.set()
        stop_feeds.set()
        receivers.shutdown()
        scorers.shutdown()
        monitor_thread.join(timeout=10)
        worklist_thread.join(timeout=10)
        for feed in feeds:
            feed.join(timeout=10)
    log.info("medscreen stopped")
    return 0
