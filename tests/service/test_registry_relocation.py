"""An MLflow store restored with its home on another path (``cp -a var ...``, the old path gone) still gives its
models: MLflow recorded absolute artifact URIs, and a version not in the model cache had answered "the download
holds no MLmodel" (and a version registered after the move wrote its artifacts under the old path)."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
from pathlib import Path

from service.lifecycle import ModelRole
from service.model_registry import alias_version, download_version, ensure_experiment, registry_client
from service.registry_relocation import relocate_artifact_root


def _uri(home: Path) -> str:
    return f"sqlite:///{home / 'mlflow.db'}"


def _locations(home: Path) -> list[str]:
    with sqlite3.connect(home / "mlflow.db") as connection:
        return [row[0] for row in connection.execute(
            "SELECT artifact_location FROM experiments WHERE artifact_location LIKE 'file:%' "
            "UNION ALL SELECT artifact_uri FROM runs UNION ALL SELECT storage_location FROM model_versions"
        )]


def test_a_store_restored_on_a_new_path_gives_its_models(registered_store: Path, tmp_path: Path) -> None:
    # The session's store, with its artifacts, copied as a backup; its recorded root is still there: left alone
    # while the copy lacks the artifacts, taken over once the copy holds them.
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copyfile(registered_store, bare / "mlflow.db")
    assert relocate_artifact_root(_uri(bare)) is None
    assert not any(location.startswith((bare / "mlartifacts").as_uri()) for location in _locations(bare))

    old = tmp_path / "old-server" / "var"
    old.parent.mkdir()
    subprocess.run(["cp", "-a", str(registered_store.parent), str(old)], check=True)
    relocate_artifact_root(_uri(old))
    assert all(location.startswith(f"{(old / 'mlartifacts').as_uri()}/") for location in _locations(old))

    new = tmp_path / "new-server" / "var"
    new.parent.mkdir()
    subprocess.run(["cp", "-a", str(old), str(new)], check=True)
    shutil.rmtree(old.parent)
    moved = relocate_artifact_root(_uri(new))
    assert moved is not None and moved.rows > 0, moved
    assert all(location.startswith(f"{(new / 'mlartifacts').as_uri()}/") for location in _locations(new))

    champion = alias_version(_uri(new), "chest-xray", ModelRole.champion)
    assert champion is not None
    model = download_version(_uri(new), "chest-xray", champion.version, tmp_path / "cache" / "chest-xray",
                             run_id=champion.run_id)
    assert (model / "model.onnx").is_file()
    assert sum(path.stat().st_size for path in model.iterdir()) > 1_000_000, "the network's weights came with it"
    experiment = registry_client(_uri(new)).get_experiment(ensure_experiment(_uri(new), "medscreen-chest-xray"))
    assert experiment.artifact_location.startswith(f"{(new / 'mlartifacts').as_uri()}/")
    assert not old.parent.exists(), "nothing was written under the old home"
    assert relocate_artifact_root(_uri(new)) is None, "a second start has nothing to move"
