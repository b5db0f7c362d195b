"""A home restored on another path: the artifact locations MLflow recorded in its sqlite store follow the home.

MLflow records absolute ``file://`` URIs for every experiment, run, logged model and model version. A home copied as
the README's backup says (``cp -a var ...``) and started from another folder or machine kept the old home's: a model
version not in the model cache could not be downloaded ("the download holds no MLmodel"), quality review's drift
reference silently fell back from the validation histogram to the first weeks in service, and a version registered
after the move (``register-shipped --update``, a retrain, the screener) wrote its artifacts under the old path, outside
the home and its backups, or failed where that path cannot be created. MLflow has no command to move a store, so its
rows are rewritten here, in one transaction, when the old folder is gone or the new one holds the same experiment;
an old folder that still holds its artifacts is left to be read where it is.
"""

from __future__ import annotations

import logging
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from service.model_registry import artifact_root_for

__all__ = ["RelocatedArtifacts", "relocate_artifact_root"]

log = logging.getLogger(__name__)

# MLflow's columns holding artifact URIs (``source`` is a models:/ URI for a logged model's version, a file URI for a
# version registered from a run's folder, as the screener's).
_URI_COLUMNS = (
    ("experiments", "artifact_location"),
    ("runs", "artifact_uri"),
    ("logged_models", "artifact_location"),
    ("model_versions", "storage_location"),
    ("model_versions", "source"),
)
_FOLDER = "mlartifacts"


@dataclass(frozen=True)
class RelocatedArtifacts:
    old: str
    new: str
    rows: int


def relocate_artifact_root(tracking_uri: str) -> RelocatedArtifacts | None:
    """Point the artifact URIs of a sqlite store that name another ``.../mlartifacts`` at the one beside it."""
    root = artifact_root_for(tracking_uri)
    if root is None:
        return None
    store = Path(tracking_uri.split("sqlite:///", 1)[1])
    if not store.is_file():
        return None
    try:
        moved = _relocate_store(store, root)
    except sqlite3.Error as exc:
        # A store locked or unreadable now is what /healthz and the registry's readers report; the start goes on.
        log.warning("MLflow store %s: its artifact locations could not be checked (%s: %s)", store,
                    type(exc).__name__, exc)
        return None
    if moved is not None and moved.rows:
        log.warning("home moved: %d MLflow artifact locations under %s now name %s", moved.rows, moved.old, moved.new)
    return moved


def _relocate_store(store: Path, root: str) -> RelocatedArtifacts | None:
    connection = sqlite3.connect(store, timeout=30, isolation_level=None)
    try:
        connection.execute("BEGIN IMMEDIATE")
        try:
            moved = _relocate(connection, root)
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        connection.execute("COMMIT")
        return moved
    finally:
        connection.close()


def _relocate(connection: sqlite3.Connection, root: str) -> RelocatedArtifacts | None:
    try:
        row = connection.execute(
            "SELECT artifact_location FROM experiments WHERE artifact_location LIKE 'file:%' AND instr(artifact_location, ?) "
            "AND substr(artifact_location, 1, ?) != ? LIMIT 1", (f"/{_FOLDER}/", len(root) + 1, f"{root}/"),
        ).fetchone()
    except sqlite3.OperationalError:  # an empty store: MLflow has not made its tables yet
        return None
    if row is None:
        return None
    location = str(row[0])
    old = location[: location.index(f"/{_FOLDER}/") + len(_FOLDER) + 1]
    here = _local(root)
    if _local(old).exists() and not (here / _local(location).relative_to(_local(old))).exists():
        log.warning("MLflow artifacts recorded under %s, not beside the store (%s), are read there: that folder exists",
                    old, root)
        return None
    rows = 0
    for table, column in _URI_COLUMNS:
        try:
            cursor = connection.execute(
                f"UPDATE {table} SET {column} = ? || substr({column}, ?) WHERE substr({column}, 1, ?) = ?",  # noqa: S608
                (root, len(old) + 1, len(old) + 1, f"{old}/"),
            )
        except sqlite3.OperationalError:  # a column or table this MLflow release does not have
            continue
        rows += cursor.rowcount
    return RelocatedArtifacts(old, root, rows)


def _local(uri: str) -> Path:
    return Path(unquote(urlparse(uri).path))
