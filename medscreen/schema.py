"""The whole product's database schema: every package's Alembic branch, applied together.

The platform (``service.db``) applies whatever branches it is given; this is the one place that names them.
"""

from __future__ import annotations

from alembic.config import Config

from service.db import alembic_config, migrate

__all__ = ["MIGRATING_PACKAGES", "migrate_all", "alembic_config_all"]

# Packages that own tables, in dependency order; each may have <package>/migrations/versions.
MIGRATING_PACKAGES = ("service", "inference", "worklist", "screening", "quality", "training")


def migrate_all(url: str) -> None:
    """Bring the database to the newest schema of every package (idempotent)."""
    migrate(url, MIGRATING_PACKAGES)


def alembic_config_all(url: str) -> Config:
    return alembic_config(url, MIGRATING_PACKAGES)
