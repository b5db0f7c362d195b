"""Benchmark: studies scored per minute by 1 and 2 ``medscreen worker`` processes (as on separate machines,
each with its own home) taking jobs from one PostgreSQL database.

    python benchmarks/scoring_scale.py [--studies 40] [--workers 1 2] [--modes shared fetch]

Each round: a fresh database migrated, N chest radiographs (copies of the test fixture as new studies)
received, completed and routed by the ingest side, then the workers started; the rate is measured
between the first and the last stored result (steady state: start-up and the first model load are
printed apart). ONNX Runtime runs one thread per worker, so 2 workers on 2 cores is the scaling test.
PostgreSQL is a throw-away server from ``tests/postgres.py`` (fsync off).
Modes: ``shared``, the workers read the ingest node's spool (``MEDSCREEN_SPOOL_PATH``); ``fetch``, each worker
fetches its study over WADO-RS (``MEDSCREEN_INGEST_URL``) from a ``medscreen serve`` started on the ingest
side's home (no scoring of its own). No PACS: write-back is off in both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import date
from pathlib import Path

_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))

DX_CHEST = _HERE.parent / "tests" / "fixtures" / "inference" / "images" / "dx_chest_highdicom.dcm"


def _start_ingest_node(env: dict[str, str], home: Path, factory) -> tuple[subprocess.Popen[bytes], dict[str, str]]:  # type: ignore[no-untyped-def]
    """`medscreen serve` on the ingest side's home, for WADO-RS only; the worker settings to fetch from it."""
    import httpx

    from service.db import session_scope
    from service.users import create_user
    from tests.ports import free_port

    http_port = free_port()
    serve = subprocess.Popen(
        [sys.executable, "-m", "medscreen", "serve"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        env={**env, "MEDSCREEN_HOME": str(home), "MEDSCREEN_HTTP_PORT": str(http_port),
             "MEDSCREEN_DICOM_PORT": str(free_port()), "MEDSCREEN_SCORING_WORKERS": "0", "MEDSCREEN_MIN_FREE_DISK_MB": "1"},
    )
    with session_scope(factory) as session:
        create_user(session, "bench-worker", "bench-worker-password", ["sender"], actor="benchmark")
    url = f"http://127.0.0.1:{http_port}"
    deadline = time.monotonic() + 300
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if serve.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("medscreen serve (the ingest node) did not start")
        time.sleep(0.5)
    return serve, {"MEDSCREEN_INGEST_URL": url, "MEDSCREEN_INGEST_USERNAME": "bench-worker",
                   "MEDSCREEN_INGEST_PASSWORD": "bench-worker-password"}


def _round(server, registry: str, folder: Path, studies: int, workers: int, mode: str) -> dict[str, object]:  # type: ignore[no-untyped-def]
    from pydicom import dcmread
    from pydicom.uid import generate_uid
    from sqlalchemy import func, select

    from inference.complete import CompletenessMonitor
    from inference.receive.process import build_ingestor
    from inference.route import load_rules
    from inference.tables import ScoreResult, ScoringJob
    from medscreen.schema import migrate_all
    from service.db import make_engine, make_session_factory
    from service.settings import Settings

    url = server.create_database()
    migrate_all(url)
    settings = Settings(home=folder / "ingest", database_url=url, mlflow_tracking_uri=registry, quiet_period_s=0.0,
                        min_free_disk_mb=1)
    settings.home.mkdir(parents=True, exist_ok=True)
    ingestor = build_ingestor(settings)
    engine = make_engine(url)
    factory = make_session_factory(engine)
    for _ in range(studies):
        ds = dcmread(DX_CHEST)
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
        target = ingestor.spool.new_incoming_path()
        ds.save_as(target)
        ingestor.accept_file(target, source="dimse")
    CompletenessMonitor(settings, factory, load_rules()).run_once()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDSCREEN_")}
    env.update(MEDSCREEN_DATABASE_URL=url, MEDSCREEN_MLFLOW_TRACKING_URI=registry, MEDSCREEN_ORT_THREADS="1",
               MEDSCREEN_SCORING_POLL_S="0.2", MEDSCREEN_LOG_LEVEL="WARNING")
    serve = None
    if mode == "fetch":
        serve, fetching = _start_ingest_node(env, settings.home, factory)
        env.update(fetching)
    else:
        env["MEDSCREEN_SPOOL_PATH"] = str(settings.spool_dir.resolve())
    began = time.perf_counter()
    processes = [
        subprocess.Popen([sys.executable, "-m", "medscreen", "worker", "--processes", "1", "--create-home"],
                         env={**env, "MEDSCREEN_HOME": str(folder / f"worker-{i}")})
        for i in range(workers)
    ]
    try:
        while True:
            with factory() as session:
                done = session.scalar(select(func.count()).select_from(ScoringJob).where(ScoringJob.state == "done")) or 0
            if done >= studies:
                break
            time.sleep(0.2)
        wall = time.perf_counter() - began
    finally:
        for p in processes + ([serve] if serve is not None else []):
            p.terminate()
        for p in processes + ([serve] if serve is not None else []):
            p.wait(timeout=30)
    with factory() as session:
        stamps = sorted(session.scalars(select(ScoreResult.created_at)))
        scored = session.scalar(select(func.count()).select_from(ScoreResult).where(ScoreResult.outcome == "scored"))
    ingestor.engine.dispose()
    engine.dispose()
    steady_s = (stamps[-1] - stamps[0]).total_seconds()
    return {
        "mode": mode,
        "workers": workers,
        "studies": studies,
        "scored": scored,
        "wall_s_from_start_incl_model_load": round(wall, 1),
        "steady_state_studies_per_minute": round((len(stamps) - 1) / steady_s * 60, 1) if steady_s > 0 else None,
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=40)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--modes", nargs="*", choices=["shared", "fetch"], default=["shared"],
                        help="shared: the ingest node's spool mounted; fetch: studies fetched over WADO-RS")
    args = parser.parse_args()

    from benchmarks.worklist_api import start_postgres
    from inference.shipped_models import register_shipped_bundles

    server = start_postgres()
    rounds = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            registry = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                register_shipped_bundles(registry)
            for mode in args.modes:
                for workers in args.workers:
                    folder = Path(tmp) / f"round-{mode}-{workers}"
                    rounds.append(_round(server, registry, folder, args.studies, workers, mode))
                    print(json.dumps(rounds[-1]), flush=True)
    finally:
        server.stop()
    print(f"date {date.today().isoformat()}, python {sys.version.split()[0]}, cpus {os.cpu_count()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
