"""The root names every package's migration branch: a new branch that the root forgets would never be applied."""

from __future__ import annotations

from medscreen.schema import MIGRATING_PACKAGES
from tests.conftest import REPO


def test_every_migration_branch_is_applied_by_the_root() -> None:
    branches = {versions.parent.parent.name for versions in REPO.glob("*/migrations/versions")}
    assert branches and branches <= set(MIGRATING_PACKAGES), sorted(branches - set(MIGRATING_PACKAGES))
