"""Shared fixtures: a temporary data directory, settings on free loopback ports, the shared data path."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from service.settings import Settings
from tests.ports import free_port  # noqa: F401  (imported from here by many tests)
from tests.postgres import postgres_database_url, postgres_server, postgres_url  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parent.parent
FIXTURES = REPO / "tests" / "fixtures"
SHARED_DATA = Path(os.environ.get("MEDSCREEN_SHARED_DATA", REPO.parent / "shared" / "data"))


# The longest test files (minutes each in CI), started first. With `--dist loadfile` a file runs whole on one worker,
# in collection order: alphabetically the training files came last, and the chest card's recomputation (3-4 min)
# began when the other workers had little left, so the run waited minutes on one worker at its end.
LONGEST_FIRST = (
    "tests/training/test_card_figures.py",
    "tests/training/test_mammography_pointing.py",
    "tests/inference/test_worker_nodes.py",
    "tests/service/test_first_start.py",
    "tests/inference/test_orthanc_triage.py",
    "tests/screening/test_page_and_scope.py",
    "tests/inference/test_worker_fetch.py",
    "tests/screening/test_population.py",
    "tests/screening/test_site_threshold.py",
    "tests/screening/test_phenopackets_and_evaluate.py",
    "tests/training/test_ct_figures.py",
    "tests/training/test_training_run.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Put the longest files first (the order within each file, and of the others, is kept)."""
    rank = {path: i for i, path in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.path)).relative_to(REPO).as_posix(), len(rank)))


@pytest.fixture
def shared_data() -> Path:
    """The real public data set beside the project (present in CI); tests that sweep it skip elsewhere."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} is absent: this test sweeps the whole shared data folder, which only CI has")
    return SHARED_DATA


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        home=tmp_path / "var",
        http_port=free_port(),
        dicom_port=free_port(),
        quiet_period_s=1.0,
        completeness_poll_s=0.2,
        dicom_receivers=1,
        min_free_disk_mb=1,
    )


@pytest.fixture(scope="session")
def registered_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An MLflow sqlite store with the shipped bundles registered as on first start, made once per session (about
    10 s: MLflow's schema migrations and three bundles logged). Tests copy it: a service started on a home holding
    the copy finds its models registered, as on any start after the first (``tests/service/test_first_start.py``
    starts on an empty home)."""
    from inference.shipped_models import register_shipped_bundles

    home = tmp_path_factory.mktemp("mlflow-registered")
    uri = f"sqlite:///{home / 'mlflow.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        registered = register_shipped_bundles(uri)
    assert any(r.name == "chest-xray" and r.version == "1" for r in registered)
    return home / "mlflow.db"
