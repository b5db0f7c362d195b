"""A model version is downloaded from the store the service is configured with, whatever MLflow's environment says."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from inference.shipped_models import SHIPPED_MODELS_DIR, log_onnx_bundle
from tests.conftest import REPO


def test_a_version_is_downloaded_from_the_configured_store_not_the_one_the_environment_names(
    registered_store: Path, tmp_path: Path
) -> None:
    """MLflow writes MLFLOW_TRACKING_URI and MLFLOW_REGISTRY_URI into os.environ when a process uses a store, and its
    children inherit them. A scoring worker started so resolved ``models:/chest-xray/2`` in the other store: "not
    found" there (retried until it gave up), or that store's version 2 where one existed. Here the configured store
    has version 2 and the environment's does not; the worker's loader is run in a fresh process with that
    environment."""
    ours, other = tmp_path / "ours", tmp_path / "other"
    for folder in (ours, other):
        folder.mkdir()
        shutil.copyfile(registered_store, folder / "mlflow.db")
    uri = f"sqlite:///{ours / 'mlflow.db'}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        new = log_onnx_bundle(uri, SHIPPED_MODELS_DIR / "chest-xray")
    assert new.version == "2"
    elsewhere = f"sqlite:///{other / 'mlflow.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": elsewhere, "MLFLOW_REGISTRY_URI": elsewhere, "PYTHONPATH": str(REPO)}
    load = (
        "import sys; from pathlib import Path; from inference.champions import ModelSelector\n"
        "selector = ModelSelector(sys.argv[1], Path(sys.argv[2]), intra_op_threads=1, refresh_s=0)\n"
        "print(selector.load('chest-xray', '2').version)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", load, uri, str(tmp_path / "cache")], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "2"
    assert any((tmp_path / "cache").rglob("chest-xray/2-*/**/model.onnx"))


def test_a_cached_version_of_another_store_or_a_recreated_store_is_never_served(registered_store: Path, tmp_path: Path) -> None:
    """The model cache was keyed by (name, version): store B's chest-xray v2 was served with the network and bundle
    store A's v2 had left in the cache (and so was a recreated mlflow.db's), under B's run id, threshold and steering
    right. Each store here registers its own bundle as v2, told apart by a mark in bundle.json."""
    import json

    from inference.champions import ModelSelector

    stores = {}
    for mark in ("A", "B"):
        folder = tmp_path / mark
        folder.mkdir()
        shutil.copyfile(registered_store, folder / "mlflow.db")
        bundle = folder / "bundle"
        shutil.copytree(SHIPPED_MODELS_DIR / "chest-xray", bundle)
        contract = json.loads((bundle / "bundle.json").read_text())
        (bundle / "bundle.json").write_text(json.dumps({**contract, "mark": mark}))
        stores[mark] = f"sqlite:///{folder / 'mlflow.db'}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            assert log_onnx_bundle(stores[mark], bundle).version == "2"
    cache = tmp_path / "model-cache"

    def served_mark(uri: str) -> str:
        return ModelSelector(uri, cache, intra_op_threads=1, refresh_s=0).load("chest-xray", "2").bundle["mark"]

    assert served_mark(stores["A"]) == "A"
    assert served_mark(stores["B"]) == "B"  # the same home pointed at another store
    # Store A's database recreated (here: replaced by B's), read by a new process as a restarted service would.
    shutil.copyfile(tmp_path / "B" / "mlflow.db", tmp_path / "A" / "mlflow.db")
    load = (
        "import sys; from pathlib import Path; from inference.champions import ModelSelector\n"
        "selector = ModelSelector(sys.argv[1], Path(sys.argv[2]), intra_op_threads=1, refresh_s=0)\n"
        "print(selector.load('chest-xray', '2').bundle['mark'])\n"
    )
    result = subprocess.run([sys.executable, "-c", load, stores["A"], str(cache)], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "B"


def test_a_download_cut_short_is_never_served_and_the_next_load_downloads_again(
    registered_store: Path, tmp_path: Path, monkeypatch
) -> None:
    """A download stopped by a full disk (or a kill) had left a complete ``MLmodel`` beside an empty ``model.onnx``
    in the cache folder; every later load took it for a complete download and failed, for good. Here the download
    writes everything, then the last file is cut and ENOSPC raised, as MLflow's parallel copy leaves it."""
    import errno

    import mlflow

    from inference.champions import ModelSelector
    from inference.errors import ModelUnavailable

    uri = f"sqlite:///{registered_store}"
    cache = tmp_path / "model-cache"
    real_download = mlflow.artifacts.download_artifacts

    def cut_short(*args, **kwargs):
        folder = Path(real_download(*args, **kwargs))
        next(folder.rglob("model.onnx")).write_bytes(b"")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", cut_short)
    selector = ModelSelector(uri, cache, intra_op_threads=1, refresh_s=0)
    try:
        selector.load("chest-xray", "1")
    except ModelUnavailable as exc:
        assert "No space left" in exc.reason
    else:
        raise AssertionError("a cut download was loaded")
    assert not [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".lock")]  # nothing left behind
    monkeypatch.setattr(mlflow.artifacts, "download_artifacts", real_download)
    restarted = ModelSelector(uri, cache, intra_op_threads=1, refresh_s=0)
    assert restarted.load("chest-xray", "1").version == "1"
    # The cache is under the home, owner-only like everything there, whatever modes the store's artifacts have
    # (MLflow copies a local store's files with their modes).
    # (The folders above the version's are made under the process's umask, 077 in the service.)
    loose = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_mode & 0o077 and not p.name.endswith(".lock")]
    assert not loose, loose[:3]


def test_a_broken_cache_folder_an_earlier_release_left_is_removed_and_downloaded_again(
    registered_store: Path, tmp_path: Path
) -> None:
    """A cache folder written before downloads were renamed into place may hold a cut download: it is replaced."""
    from inference.champions import ModelSelector

    uri = f"sqlite:///{registered_store}"
    cache = tmp_path / "model-cache"
    ModelSelector(uri, cache, intra_op_threads=1, refresh_s=0).load("chest-xray", "1")
    onnx = next(cache.rglob("model.onnx"))
    onnx.write_bytes(b"")  # as a cut download left it: MLmodel complete, model.onnx empty
    assert ModelSelector(uri, cache, intra_op_threads=1, refresh_s=0).load("chest-xray", "1").version == "1"
    assert onnx.stat().st_size > 0
