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
from service.steering import DeferRules
from training.errors import PromotionRefused, RegistryError
from training.registry import list_versions, make_first_champion, set_challenger


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


def test_first_champion_and_challenger_aliases(tracking_uri, make_bundle) -> None:
    """Only a model without a champion gets one without the gate; the challenger alias is set directly."""
    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.90)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.95)).version
    make_first_champion(tracking_uri, "chest-xray", v1, rules=DeferRules())
    with pytest.raises(PromotionRefused, match="medscreen quality promote"):
        make_first_champion(tracking_uri, "chest-xray", v2, rules=DeferRules())
    assert set_challenger(tracking_uri, "chest-xray", v2) is None
    with pytest.raises(PromotionRefused, match="is the champion"):
        set_challenger(tracking_uri, "chest-xray", v1)
    rows = {row.version: row for row in list_versions(tracking_uri)}
    assert rows[v1].aliases == ("champion",) and rows[v2].aliases == ("challenger",)
    with pytest.raises(RegistryError):
        set_challenger(tracking_uri, "chest-xray", "99")


def test_models_cli_lists_and_sets_the_challenger(tracking_uri, make_bundle, monkeypatch, capsys, tmp_path) -> None:
    monkeypatch.setenv("MEDSCREEN_MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path))
    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.9)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.8), source="retrained")
    make_first_champion(tracking_uri, "chest-xray", v1, rules=DeferRules())
    assert main(["models", "promote", "chest-xray", v1, "--alias", "challenger"]) == 1
    assert "refused" in capsys.readouterr().out
    assert main(["models", "promote", "chest-xray", v2.version, "--alias", "challenger"]) == 0
    assert "challenger -> version 2" in capsys.readouterr().out
    assert main(["models", "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["model", "version", "aliases", "val", "AUROC", "threshold", "steering", "source", "run"]
    assert rows[0].split()[:4] == ["chest-xray", v1, "champion", "0.9000"]
    # "retrained" had filled its 9-wide column and run into the run id ("retrained2e65d6e5..."): copying the id
    # picked up the word. Each column starts where its header does.
    retrained = rows[1]
    assert retrained.split()[:3] == ["chest-xray", v2.version, "challenger"] and retrained.split()[-2:] == ["retrained", v2.run_id]
    assert retrained.index("retrained") == header.index("source") and retrained.index(v2.run_id) == header.index("run")
    assert retrained.split()[-3] == "shadow"  # a bundle with no right and no figures: shadow


def _aliases(tracking_uri: str) -> dict[str, str]:
    return {alias: str(v) for alias, v in MlflowClient(tracking_uri, tracking_uri).get_registered_model("chest-xray").aliases.items()}


def test_models_promote_goes_through_the_quality_gate_and_can_be_rolled_back(
    tracking_uri, make_bundle, monkeypatch, capsys, caplog, tmp_path
) -> None:
    """`medscreen models promote` had set the champion alias on the version's training-time AUROC alone: a retrain
    validated on a few studies of its own export (AUROC 1.0) became champion with no gate, no audit row and no
    previous-champion (so `quality rollback` failed), and kept its challenger alias. It is now the same audited
    promotion through the gate as `medscreen quality promote`."""
    from sqlalchemy import select

    from service.db import make_engine, make_session_factory, session_scope
    from service.tables import AuditEvent
    from tests.training.confirmed_pairs import seed_confirmed_pairs

    database_url = f"sqlite:///{tmp_path / 'medscreen.db'}"
    for key, value in {"HOME": str(tmp_path), "MLFLOW_TRACKING_URI": tracking_uri, "DATABASE_URL": database_url}.items():
        monkeypatch.setenv(f"MEDSCREEN_{key}", value)
    v1 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=0.98)).version
    v2 = log_onnx_bundle(tracking_uri, make_bundle(val_auroc=1.0), source="retrained").version
    make_first_champion(tracking_uri, "chest-xray", v1, rules=DeferRules())
    set_challenger(tracking_uri, "chest-xray", v2)

    assert main(["models", "promote", "chest-xray", v2]) == 2  # who promotes is audited
    assert "--actor" in capsys.readouterr().out
    seed_confirmed_pairs(database_url, 40, champion=v1, challenger=v2)
    assert main(["models", "promote", "chest-xray", v2, "--actor", "emma"]) == 1
    assert "refused" in capsys.readouterr().out and _aliases(tracking_uri) == {"champion": v1, "challenger": v2}
    seed_confirmed_pairs(database_url, 400, champion=v1, challenger=v2)
    assert main(["models", "promote", "chest-xray", v2, "--actor", "emma"]) == 0
    assert "gate passed" in capsys.readouterr().out
    assert _aliases(tracking_uri) == {"champion": v2, "previous-champion": v1}
    assert main(["quality", "rollback", "--task", "chest-xray", "--actor", "emma"]) == 0
    assert _aliases(tracking_uri)["champion"] == v1
    engine = make_engine(database_url)
    with session_scope(make_session_factory(engine)) as session:
        actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.action.like("model.%")).order_by(AuditEvent.id)))
    engine.dispose()
    assert actions == ["model.promote_refused", "model.promote", "model.rollback"]
    # The rollback had swapped the aliases: the withdrawn v2 held previous-champion and a second rollback (a retry,
    # a second team member) made it champion again, without the gate. v1 keeps previous-champion (the version the
    # last promotion replaced): a second rollback moves nothing and says so; v2 comes back only through promotion.
    assert _aliases(tracking_uri) == {"champion": v1, "previous-champion": v1}
    capsys.readouterr()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.model_registry"):
        assert main(["quality", "rollback", "--task", "chest-xray", "--actor", "emma"]) == 0
    assert _aliases(tracking_uri) == {"champion": v1, "previous-champion": v1}
    said = capsys.readouterr().out  # the command's own line (the registry logs a WARNING too), no "1 -> 1"
    assert said.startswith(f"chest-xray: champion is already v{v1}, the version the last promotion replaced: nothing to roll back")


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
