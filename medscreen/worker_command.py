"""``medscreen worker``: scoring worker processes on a machine of their own, so that a site adds machines
instead of cores.

The workers take jobs from the site's shared PostgreSQL database (``MEDSCREEN_DATABASE_URL``; leases with
``SELECT ... FOR UPDATE SKIP LOCKED``, so two machines never score the same job and a dead machine's job
is taken over when its lease ends) and read each study's instances at the paths the ingest node
recorded. So the ingest node's spool is mounted here at the same path and named by
``MEDSCREEN_SPOOL_PATH``: the result documents a worker builds (``spool/outgoing``) are then where the
ingest node's study view and any machine's dispatcher find them. Models come from the shared MLflow
registry (``MEDSCREEN_MLFLOW_TRACKING_URI``) into this machine's ``MEDSCREEN_HOME`` (model cache).
The ingest node (``medscreen serve``) owns the schema; a worker never migrates it.

Without the shared spool, ``MEDSCREEN_INGEST_URL`` (and a ``sender`` account on the ingest node) makes the
worker fetch each study it scores over WADO-RS (``inference/fetch_instances.py``). Its SR and heat-map then
stay in its own ``spool/outgoing``; their outgoing rows name this node (``inference/spool_node.py``) and only
this node's dispatcher (in each of its scoring processes) sends them, so a node that is gone leaves its rows
waiting, listed with their node and age in ``GET /api/outgoing``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading

from service.settings import Settings
from service.shutdown import stop_on_signals

__all__ = ["add_commands", "run_workers"]

log = logging.getLogger(__name__)

# A table the ingest node's migrations create; its absence means the schema was never set up there.
_JOBS_TABLE = "scoring_jobs"


def run_workers(settings: Settings, processes: int) -> int:
    from sqlalchemy import inspect
    from sqlalchemy.exc import SQLAlchemyError

    from inference.outgoing import pacs_destination
    from inference.spool_node import spool_node
    from inference.worker_process import run_scoring_process
    from medscreen.process_supervisor import ProcessSupervisor
    from service.db import make_engine

    url = settings.resolved_database_url
    if url.startswith("sqlite"):
        log.warning("MEDSCREEN_DATABASE_URL is SQLite: only processes on this machine can share it")
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            ready = inspector.has_table(_JOBS_TABLE)
            current = ready and any(c["name"] == "node" for c in inspector.get_columns("outgoing_results"))
    except SQLAlchemyError as exc:
        sys.stderr.write(f"medscreen worker: cannot reach the database: {type(exc).__name__}\n")
        return 2
    finally:
        engine.dispose()
    if not ready:
        sys.stderr.write("medscreen worker: the database has no schema yet; start medscreen serve on the ingest node first\n")
        return 2
    if not current:
        # Its outgoing rows would name no node, and another node's dispatcher would claim them.
        sys.stderr.write("medscreen worker: the database schema is older than this worker; upgrade and start medscreen serve first\n")
        return 2
    settings.home.mkdir(parents=True, exist_ok=True)
    node = spool_node(settings)
    destination = pacs_destination(settings)
    log.info(
        "node %s: result documents in %s, %s", node, settings.spool_dir.resolve(),
        f"written back by this node's dispatcher ({destination['kind']})" if destination else "write-back off",
    )
    stop = threading.Event()
    stop_on_signals(stop)
    workers = ProcessSupervisor(settings, "scoring-worker", run_scoring_process, processes)
    workers.start()
    if settings.ingest_url:
        # Only this node's spool holds these result documents, so only this node can remove them once sent and
        # read; with a shared spool the ingest node's cleaner sees them at the same path.
        from inference.retention import run_retention_loop
        from service.db import make_session_factory

        threading.Thread(
            target=run_retention_loop, args=(settings, make_session_factory(make_engine(url)), stop, node),
            name="retention", daemon=True,
        ).start()
    log.info("%d scoring worker process(es) on this machine; models cached in %s", workers.count, settings.home.resolve())
    try:
        stop.wait()
    finally:
        workers.shutdown()
    return 0


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    return run_workers(settings, args.processes or settings.scoring_workers)


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "worker",
        help="run scoring workers on this machine against the shared PostgreSQL database (no HTTP, no DICOM)",
        description="Scoring workers for a site with more than one machine: jobs from MEDSCREEN_DATABASE_URL "
        "(PostgreSQL), the ingest node's spool mounted at the same path as MEDSCREEN_SPOOL_PATH, models from "
        "MEDSCREEN_MLFLOW_TRACKING_URI, model cache under MEDSCREEN_HOME.",
    )
    parser.add_argument("--processes", type=int, default=None, help="worker processes (default MEDSCREEN_SCORING_WORKERS)")
    parser.set_defaults(func=_worker)
