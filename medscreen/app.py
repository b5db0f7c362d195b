"""The FastAPI app factory: one app per settings object, each package's router mounted here."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException

from medscreen.process_supervisor import ProcessState
from medscreen.schema import migrate_all
from medscreen.version import installed_version
from medscreen.waiting_work import waiting_problems
from service.db import make_engine, make_session_factory, utcnow
from service.deps import SessionDep
from service.settings import Settings

if TYPE_CHECKING:
    from inference.ingest import InstanceIngestor

__all__ = ["create_app"]


def _resource_problems(settings: Settings, ingestor: InstanceIngestor) -> list[str]:
    """Why studies cannot be received now, from two system calls per folder (no file is written per probe)."""
    problems: list[str] = []
    spool = ingestor.spool
    try:
        if not ingestor.has_free_disk():
            problems.append(
                f"free disk under {spool.studies} is below the {settings.min_free_disk_mb} MB watermark "
                "(MEDSCREEN_MIN_FREE_DISK_MB): new studies are refused"
            )
    except OSError as exc:
        problems.append(f"the spool cannot be read: {exc}")
    for folder in (spool.incoming, spool.studies, spool.outgoing):
        # access(2) answers EROFS for a read-only file system (ext4's errors=remount-ro) as for a folder not ours.
        if not os.access(folder, os.W_OK | os.X_OK):
            why = "missing" if not os.path.isdir(folder) else "read-only or not writable by this account"
            problems.append(f"the spool folder {folder} cannot be written ({why}): new studies are refused")
    return problems


def create_app(
    settings: Settings, *, run_migrations: bool = True, process_states: Callable[[], list[ProcessState]] | None = None,
    champion_problems: Callable[[], dict[str, str]] | None = None,
) -> FastAPI:
    """``process_states``: the supervised receiver and scoring processes (``medscreen serve``), for ``/healthz``;
    ``champion_problems``: {task: why it has no loadable champion}, as ``medscreen serve``'s background check last
    found it (``inference.champions.ChampionWatch``), for ``/healthz``."""
    # Imported here so that building the CLI parser does not import every router.
    from inference.api import router as studies_router
    from inference.fhir_api import router as results_fhir_router
    from inference.receive.process import build_ingestor
    from inference.receive.stowrs import router as stowrs_router
    from inference.wadors import router as wadors_router
    from quality.api import router as quality_router
    from quality.page import page_router as quality_page_router
    from screening.api import page_router as screening_page_router
    from screening.api import router as screening_router
    from screening.fhir_feed import fhir_router as screening_fhir_router
    from service.audit import router as audit_router
    from service.auth import load_or_create_secret_key
    from service.auth import router as auth_router
    from service.fhir_capability import capability_router
    from service.login import router as login_router
    from service.outbox_api import router as outbox_router
    from worklist.api import router as worklist_router
    from worklist.page import page_router as worklist_page_router

    settings.home.mkdir(parents=True, exist_ok=True)
    url = settings.resolved_database_url
    if run_migrations:
        migrate_all(url)
    engine = make_engine(url)

    from mlflow.exceptions import MlflowException

    from service.api_docs import docs_router
    from service.fhir_http import FhirEdge
    from service.http_methods import HeadAsGet, http_error
    from service.registry_unavailable import registry_unavailable
    from service.request_guard import RequestGuard
    from service.security_headers import SecurityHeaders

    # /docs and /openapi.json are served behind login by service/api_docs.py, with local Swagger UI files.
    app = FastAPI(
        title="medscreen",
        version=installed_version(),
        description="Decision support only: scores are not diagnoses. Every result names its model and version.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    # Added last runs first: HEAD as GET (it sees the final headers), headers on every answer, FHIR's error format
    # (outside the guard, whose 401s it turns too), then the token and size checks before any body is read.
    app.add_middleware(RequestGuard)
    app.add_middleware(FhirEdge)
    app.add_middleware(SecurityHeaders)
    app.add_middleware(HeadAsGet)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(MlflowException, registry_unavailable)
    app.state.settings = settings
    app.state.engine = engine
    app.state.session_factory = make_session_factory(engine)
    app.state.ingestor = build_ingestor(settings)
    # Resolved (and generated on first start) here so that a broken key file stops the start, not a login.
    app.state.secret_key = load_or_create_secret_key(settings)

    @app.get(
        "/healthz", tags=["health"], response_class=JSONResponse,
        responses={503: {"description": "degraded: studies may not be received or scored; `problems` says why"}},
    )
    def healthz(session: SessionDep) -> JSONResponse:
        """``ok`` (200), or ``degraded`` (503), with each reason in ``problems``, while a supervised process is not
        running or keeps dying at start (the DICOM port held by another program, say), the free disk is under
        ``MEDSCREEN_MIN_FREE_DISK_MB``, the spool cannot be written, a task has no loadable champion, or a study or outbox
        message has waited longer than ``MEDSCREEN_HEALTHZ_MAX_WAIT_S`` (``medscreen/waiting_work.py``). Each of these
        had left the HTTP side up and answering ok while no study was received or scored. Cheap per probe: the
        champions are checked in the background, the disk and spool by system calls."""
        session.execute(text("SELECT 1"))
        processes = [asdict(state) for state in process_states()] if process_states else []
        problems = [f"{state['name']} is not running or keeps dying at start" for state in processes if state["failing"]]
        problems += _resource_problems(settings, app.state.ingestor)
        # Alive is not working: a hung worker or loop, or a peer that never acknowledges, shows as work waiting.
        problems += waiting_problems(session, settings, utcnow())
        if champion_problems is not None:
            problems += [f"task {task} has no loadable champion: {why}" for task, why in sorted(champion_problems().items())]
        return JSONResponse(
            {"status": "degraded" if problems else "ok", "processes": processes, "problems": problems},
            status_code=503 if problems else 200,
        )

    app.include_router(docs_router)
    app.include_router(studies_router)
    app.include_router(stowrs_router)
    app.include_router(wadors_router)
    app.include_router(login_router)
    app.include_router(auth_router)
    app.include_router(audit_router)
    app.include_router(screening_router)
    app.include_router(screening_page_router)
    app.include_router(worklist_router)
    app.include_router(worklist_page_router)
    app.include_router(quality_router)
    app.include_router(quality_page_router)
    app.include_router(results_fhir_router)
    app.include_router(screening_fhir_router)
    app.include_router(capability_router())
    app.include_router(outbox_router)
    return app
