"""Registration, the champion promotion rule and first-start registration of the shipped bundles."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
from mlflow.tracking import MlflowClient

from inference.shipped_models import (
    SHIPPED_MODELS_DIR,
    TASKS,
    bundle_digest,
    load_champion,
    log_onnx_bundle,
    register_shipped_bundles,
    register_updated_shipped_bundles,
)
from medscreen.cli import main
from training.errors import PromotionRefused, RegistryError
from training.registry import list_versions, promote


def test_logged_bundle_is_a_registered_version_with_signature_and_tags(tracking_uri, make_bundle) -> None:
    registered = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.91, threshold=0.4))
    client = MlflowClient(tracking_uri, tracking_uri)
    version = client.get_model_version("chest-xray", registered.version)
    assert version.tags["task"] == "chest-xray"
    assert float(version.tags["threshold"]) == 0.4 and float(version.tags["val_auroc"]) == 0.91
    assert client.get_registered_model("chest-xray").tags["task"] == "chest-xray"
    from mlflow.models import get_model_info

    info = get_model_info(f"models:/chest-xray/{registered.version}")
    assert info.signature.inputs.input_names() == ["image"]
    assert [o.name for o in info.signature.outputs.inputs] == ["score", "heatmap"]


def test_promotion_refuses_a_lower_auroc_unless_forced(tracking_uri, make_bundle, caplog) -> None:
    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.90)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.85)).version
    v3 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.95)).version
    assert promote(tracking_uri, "chest-xray", v1) is None
    with pytest.raises(PromotionRefused, match="below champion"):
        promote(tracking_uri, "chest-xray", v2)
    assert promote(tracking_uri, "chest-xray", v3) == v1  # higher AUROC: allowed
    with caplog.at_level(logging.WARNING, logger="training.registry"):
        assert promote(tracking_uri, "chest-xray", v2, force=True) == v3
    assert "forced promotion" in caplog.text
    rows = {row.version: row for row in list_versions(tracking_uri)}
    assert rows[v2].aliases == ("champion",) and rows[v3].aliases == ()
    with pytest.raises(RegistryError):
        promote(tracking_uri, "chest-xray", "99")


def test_models_cli_lists_and_promotes(tracking_uri, make_bundle, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path))
    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.9)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.8)).version
    assert main(["models", "promote", "chest-xray", v1, "--alias", "champion"]) == 0
    assert main(["models", "promote", "chest-xray", v2]) == 1
    assert "refused" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "chest-xray" in out and "champion" in out and "0.9000" in out
    assert "steering" in out.splitlines()[0] and "shadow" in out  # a bundle with no right and no figures: shadow


def test_shipped_bundles_register_once_as_champion(tracking_uri, tmp_path) -> None:
    shipped = [t for t in TASKS if (SHIPPED_MODELS_DIR / t / "model.onnx").is_file()]
    assert "chest-xray" in shipped
    first = register_shipped_bundles(tracking_uri)
    assert [r.name for r in first] == shipped and all(r.newly_registered and r.version == "1" for r in first)
    second = register_shipped_bundles(tracking_uri)
    assert [(r.name, r.version, r.newly_registered) for r in second] == [(t, "1", False) for t in shipped]
    champion = load_champion(tracking_uri, "chest-xray", tmp_path / "champion")
    assert champion.version == "1" and champion.onnx_path.is_file()
    assert champion.bundle["input"]["name"] == "image"
    assert champion.threshold == pytest.approx(champion.bundle["threshold"])


def test_an_updated_shipped_bundle_becomes_a_challenger_once(tracking_uri, tmp_path, monkeypatch, capsys) -> None:
    """An upgrade ships a changed bundle (here: the chest model's localisation map renamed): ``register-shipped
    --update`` registers it once as a challenger and leaves the champion; an unchanged bundle is not registered again."""
    register_shipped_bundles(tracking_uri)
    shipped = [t for t in TASKS if (SHIPPED_MODELS_DIR / t / "model.onnx").is_file()]
    unchanged = register_updated_shipped_bundles(tracking_uri)
    assert [(r.name, r.version, r.newly_registered) for r in unchanged] == [(t, "1", False) for t in shipped]

    upgraded = tmp_path / "models"
    shutil.copytree(SHIPPED_MODELS_DIR / "chest-xray", upgraded / "chest-xray")
    bundle = json.loads((upgraded / "chest-xray" / "bundle.json").read_text())
    bundle.setdefault("localisation", {})["map"] = "an updated map"
    (upgraded / "chest-xray" / "bundle.json").write_text(json.dumps(bundle))
    assert bundle_digest(upgraded / "chest-xray") != bundle_digest(SHIPPED_MODELS_DIR / "chest-xray")

    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path))
    assert main(["models", "register-shipped", "--update", "--models-dir", str(upgraded)]) == 0
    assert "chest-xray version 2: registered as challenger" in capsys.readouterr().out
    client = MlflowClient(tracking_uri, tracking_uri)
    assert str(client.get_model_version_by_alias("chest-xray", "champion").version) == "1"
    assert str(client.get_model_version_by_alias("chest-xray", "challenger").version) == "2"
    again = register_updated_shipped_bundles(tracking_uri, upgraded)
    assert [(r.name, r.version, r.newly_registered) for r in again] == [("chest-xray", "2", False)]
    assert len(client.search_model_versions("name = 'chest-xray'")) == 2
