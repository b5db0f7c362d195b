"""Fixtures of the security tests: the real ingestor, receiver, app and service from the inference and service tests."""

from __future__ import annotations

from tests.inference.conftest import (  # noqa: F401  (fixtures)
    add_user,
    app,
    client,
    database_url,
    dimse_server,
    incoming_copy,
    ingestor,
    medscreen_service,
    service_settings,
    sqlite_settings,
)
