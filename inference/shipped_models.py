"""The model bundles shipped in ``models/<task>/`` and their place in the MLflow Model Registry.

Serving imports this (MLflow + ONNX, never torch). On start-up :func:`register_shipped_bundles`
registers each shipped bundle as version 1 with alias ``champion`` when the registry has no
version of that model yet, so a fresh machine scores studies without a training step. Training
uses :func:`log_onnx_bundle` too, so a trained version and a shipped one look the same.

Registered model names are the task names: ``chest-xray``, ``mammography``, ``ct-chest``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inference.errors import BundleInvalid, RegistryLost
from inference.model_contract import check_contract, check_declared_outputs, open_session
from service.lifecycle import TASKS, ModelRole, SteeringRight
from service.model_registry import (
    STEERING_TAG,
    alias_version,
    download_version,
    ensure_experiment,
    ensure_registered_model,
    registry_client,
    set_alias,
    set_steering,
)
from service.steering import DeferRules, registration_right

__all__ = [
    "TASKS",
    "SHIPPED_MODELS_DIR",
    "ShippedBundle",
    "scored_models",
    "RegisteredBundle",
    "ChampionBundle",
    "read_bundle",
    "check_bundle",
    "shipped_intended_use",
    "log_onnx_bundle",
    "register_shipped_bundles",
    "register_updated_shipped_bundles",
    "bundle_digest",
    "load_champion",
]

log = logging.getLogger(__name__)

SHIPPED_MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
_BUNDLE_FILES = ("model.onnx", "bundle.json", "metrics.json", "card.md")


def bundle_digest(folder: Path) -> str:
    """SHA-256 over a bundle's four files: two folders with one digest serve and describe the same model."""
    digest = hashlib.sha256()
    for filename in _BUNDLE_FILES:
        content = (Path(folder) / filename).read_bytes()
        digest.update(f"{filename}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


@dataclass(frozen=True)
class ShippedBundle:
    """A bundle folder: ``model.onnx``, ``bundle.json`` (I/O contract), ``metrics.json``, ``card.md``."""

    task: str
    folder: Path
    bundle: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def onnx_path(self) -> Path:
        return self.folder / "model.onnx"

    @property
    def threshold(self) -> float:
        return float(self.bundle["threshold"])


@dataclass(frozen=True)
class RegisteredBundle:
    name: str
    version: str
    run_id: str
    newly_registered: bool


@dataclass(frozen=True)
class ChampionBundle:
    """The champion of one model, downloaded: where its ONNX file is and its I/O contract."""

    name: str
    version: str
    onnx_path: Path
    bundle: dict[str, Any]
    threshold: float


def shipped_intended_use(task: str, models_dir: Path = SHIPPED_MODELS_DIR) -> dict[str, Any] | None:
    """The ``intended_use`` declared by the shipped bundle of ``task`` (None when there is none)."""
    path = Path(models_dir) / task / "bundle.json"
    if not path.is_file():
        return None
    use = json.loads(path.read_text()).get("intended_use")
    return dict(use) if use else None


def read_bundle(folder: Path) -> ShippedBundle:
    folder = Path(folder)
    missing = [name for name in _BUNDLE_FILES if not (folder / name).is_file()]
    if missing:
        raise FileNotFoundError(f"model bundle {folder} lacks {', '.join(missing)}")
    try:
        bundle = json.loads((folder / "bundle.json").read_text())
        metrics = json.loads((folder / "metrics.json").read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise BundleInvalid(f"model bundle {folder}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(bundle, dict) or not isinstance(metrics, dict):
        raise BundleInvalid(f"model bundle {folder}: bundle.json and metrics.json must each hold a JSON object")
    missing = [key for key in ("task", "model_name", "threshold") if key not in bundle]
    if missing:
        raise BundleInvalid(f"model bundle {folder}: bundle.json has no {', '.join(missing)}")
    if bundle["task"] not in TASKS:
        raise BundleInvalid(f"model bundle {folder}: bundle.json task {bundle['task']!r} is not one of {', '.join(TASKS)}")
    return ShippedBundle(bundle["task"], folder, bundle, metrics)


def check_bundle(shipped: ShippedBundle) -> None:
    """Refuse (BundleInvalid, naming the folder) a bundle whose ``model.onnx`` is not the model ``bundle.json``
    describes (``inference.model_contract``), before anything is logged or registered."""
    try:
        session = open_session(str(shipped.onnx_path))
        check_contract(shipped.bundle, session, shipped.bundle.get("threshold"))
        check_declared_outputs(shipped.bundle, session)
    except BundleInvalid as exc:
        raise BundleInvalid(f"model bundle {shipped.folder}: {exc.reason}") from exc


def _signature(bundle: dict[str, Any]) -> Any:
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import Schema, TensorSpec

    spec = bundle["input"]
    inputs = Schema([TensorSpec(np.dtype(spec["dtype"]), tuple(spec["shape"]), spec["name"])])
    outputs = Schema(
        [TensorSpec(np.dtype("float32"), tuple(o["shape"]), o["name"]) for o in bundle["outputs"]]
    )
    return ModelSignature(inputs=inputs, outputs=outputs)


def _flat_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Numeric leaves of metrics.json as ``a.b.c`` keys, the form MLflow metrics and tags take."""
    flat: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, bool):
            return
        elif isinstance(value, int | float):
            flat[prefix] = float(value)

    walk("", metrics)
    return flat


def log_onnx_bundle(
    tracking_uri: str, folder: Path, *, run_id: str | None = None, source: str = "trained", rules: DeferRules | None = None
) -> RegisteredBundle:
    """Log the bundle in ``folder`` as an MLflow ONNX model with its signature and register a new version.

    With ``run_id`` the model is logged into that (training) run; without, a run named
    ``shipped-bundle`` is created. The version gets tags ``task``, ``threshold``, ``val_auroc``
    and the other headline metrics, and the steering right the bundle earns under ``rules`` (the site's
    ``MEDSCREEN_STEERING_DEFER_*``, ``service.steering.defer_rules_from_settings``; the defaults when None);
    the registered model gets the ``task`` tag.
    """
    import mlflow
    import onnx

    shipped = read_bundle(folder)
    check_bundle(shipped)
    name = shipped.bundle["model_name"]
    experiment_id = ensure_experiment(tracking_uri, f"medscreen-{shipped.task}")
    client = registry_client(tracking_uri)
    headline = shipped.metrics.get("headline", {})

    def log_into_active_run() -> Any:
        info = mlflow.onnx.log_model(
            onnx.load(str(shipped.onnx_path)),
            name="model",
            signature=_signature(shipped.bundle),
            metadata={"task": shipped.task, "bundle": shipped.bundle},
        )
        with tempfile.TemporaryDirectory() as tmp:
            for filename in ("bundle.json", "metrics.json", "card.md"):
                (Path(tmp) / filename).write_bytes((folder / filename).read_bytes())
            mlflow.log_artifacts(tmp, artifact_path="bundle")
        return info

    if run_id is None:
        with mlflow.start_run(experiment_id=experiment_id, run_name="shipped-bundle") as run:
            mlflow.set_tags({"task": shipped.task, "source": source})
            mlflow.log_metrics({k: v for k, v in _flat_metrics(headline).items()})
            info = log_into_active_run()
            run_id = run.info.run_id
    else:
        with mlflow.start_run(run_id=run_id):
            info = log_into_active_run()
    ensure_registered_model(tracking_uri, name, tags={"task": shipped.task})
    version = client.create_model_version(name, info.model_uri, run_id=run_id, tags={"task": shipped.task, "source": source})
    # The threshold tag keeps full precision: serving compares scores against exactly this value.
    tags = {
        **{k: f"{v:.6g}" for k, v in _flat_metrics(headline).items()},
        "threshold": repr(shipped.threshold),
        "bundle_sha256": bundle_digest(folder),  # lets an upgrade tell a new shipped bundle from one registered
    }
    for key, value in tags.items():
        client.set_model_version_tag(name, version.version, key, value)
    _record_steering(tracking_uri, name, str(version.version), shipped.bundle, shipped.metrics, rules or DeferRules())
    client.set_registered_model_tag(name, "task", shipped.task)
    return RegisteredBundle(name, str(version.version), run_id, True)


def _record_steering(
    tracking_uri: str, name: str, version: str, bundle: dict[str, Any], metrics: dict[str, Any], rules: DeferRules
) -> SteeringRight:
    """Record the right the bundle asks for as far as its evidence earns it (``service.steering.registration_right``):
    ``defer`` only with evidence that earns it, else what its development figures earn, ``shadow`` without them."""
    right, evidence, why = registration_right(bundle.get("steering"), metrics.get("headline", {}), rules)
    asked = (bundle.get("steering") or {}).get("right")
    if asked != right.value:
        log.warning("%s v%s asks steering %r; recorded as %s: %s", name, version, asked, right.value, why)
    set_steering(tracking_uri, name, version, right, evidence=evidence, rules=rules)
    return right


def _backfill_steering(tracking_uri: str, versions: list[Any], rules: DeferRules) -> None:
    """Record a right on each version that has none (registered before rights were recorded, or by MLflow's own
    client): what the bundle logged with its run asks and earns, as at registration; ``shadow`` when that bundle
    cannot be read. Such a version reads as shadow anyway; the tag makes the right visible and explicit."""
    import mlflow
    from mlflow.exceptions import MlflowException

    for version in versions:
        if STEERING_TAG in (version.tags or {}):
            continue
        name, number = str(version.name), str(version.version)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                folder = Path(mlflow.artifacts.download_artifacts(
                    run_id=version.run_id, artifact_path="bundle", dst_path=tmp, tracking_uri=tracking_uri))
                bundle = json.loads((folder / "bundle.json").read_text())
                metrics = json.loads((folder / "metrics.json").read_text())
        except (MlflowException, OSError, ValueError, TypeError) as exc:
            log.warning("%s v%s has no steering right and its bundle cannot be read (%s): recorded as shadow", name, number, exc)
            set_steering(tracking_uri, name, number, SteeringRight.shadow, evidence=None, rules=rules)
            continue
        right = _record_steering(tracking_uri, name, number, bundle, metrics, rules)
        log.warning("%s v%s had no steering right recorded: now %s, from the bundle logged with it", name, number, right.value)


def register_shipped_bundles(
    tracking_uri: str, models_dir: Path = SHIPPED_MODELS_DIR, *, rules: DeferRules | None = None,
    scored: Mapping[str, Collection[str]] | None = None, tasks: Collection[str] = TASKS,
) -> list[RegisteredBundle]:
    """Register each shipped bundle (of ``tasks``, all by default) as version 1 + alias ``champion`` when its model has
    no version yet.

    Idempotent: a model that already has any version (shipped or trained) is left alone and
    reported with its current champion (or latest) version; only a version with no steering right
    recorded gets one (:func:`_backfill_steering`). Bundles missing on disk are skipped with a warning
    so that a partial checkout still starts. ``rules``: the site's defer thresholds (the defaults when None).

    ``scored``: {model name: versions} with results in this site's database (``medscreen serve`` passes it). A model
    the registry has no version of but the site has results of is refused (RegistryLost), not registered: the store is
    a new one (a tracking URI changed, a volume not mounted, a store lost), and the shipped bundle as "version 1" would
    have replaced the site's champion unannounced, its results filed under version numbers of the old store's
    versions. ``medscreen models register-shipped`` (which passes none) registers them into such a store by hand.
    """
    rules = rules or DeferRules()
    client = registry_client(tracking_uri)
    results: list[RegisteredBundle] = []
    new: dict[str, Path] = {}  # the bundles of models without a version, registered once all are read
    for task in (t for t in TASKS if t in tasks):
        folder = Path(models_dir) / task
        try:
            shipped = read_bundle(folder)
        except FileNotFoundError as exc:
            log.warning("no shipped bundle for %s: %s", task, exc)
            continue
        name = shipped.bundle["model_name"]
        existing = (
            client.search_model_versions(filter_string=f"name = '{name}'")
            if client.search_registered_models(filter_string=f"name = '{name}'")
            else []
        )
        if existing:
            _backfill_steering(tracking_uri, existing, rules)
            champion = alias_version(tracking_uri, name, ModelRole.champion, client=client)
            if champion is not None:
                results.append(RegisteredBundle(name, champion.version, champion.run_id, False))
            else:  # no champion alias: report the newest version
                results.append(_newest(name, existing))
            continue
        new[name] = folder
    scored = scored or {}
    lost = [name for name in new if scored.get(name)]
    if lost:
        # Checked before any is registered: a store that is not the site's gets none of them.
        held = "; ".join(
            f"{name} " + ", ".join(f"v{v}" for v in sorted(scored[name], key=lambda v: (len(v), v))) for name in lost
        )
        raise RegistryLost(
            f"the model registry holds no {', '.join(lost)} model, but this site's database holds results of {held}: "
            "is MEDSCREEN_MLFLOW_TRACKING_URI the site's registry (a changed URI, a volume not mounted, a lost store)? "
            "The shipped models are not registered into it; `medscreen models register-shipped` does so by hand"
        )
    results.extend(_register_shipped_as(tracking_uri, folder, ModelRole.champion, rules) for folder in new.values())
    return results


def scored_models(database_url: str) -> dict[str, set[str]]:
    """{model name: versions} with results in the site's database (``scored`` of :func:`register_shipped_bundles`): a
    registry without them is not the site's. A database not made yet (a training run before the first start) holds
    none, and is not made here."""
    from sqlalchemy import inspect, select

    from inference.tables import ScoreResult
    from service.db import make_engine

    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[-1]
        if path and path != ":memory:" and not Path(path).exists():
            return {}
    engine = make_engine(database_url)
    try:
        if not inspect(engine).has_table(ScoreResult.__tablename__):
            return {}
        with engine.connect() as connection:
            rows = connection.execute(select(ScoreResult.model_name, ScoreResult.model_version).distinct()).all()
    finally:
        engine.dispose()
    scored: dict[str, set[str]] = {}
    for name, version in rows:
        scored.setdefault(str(name), set()).add(str(version))
    return scored


def _newest(name: str, versions: list[Any]) -> RegisteredBundle:
    newest = max(versions, key=lambda v: int(v.version))
    return RegisteredBundle(name, str(newest.version), newest.run_id or "", False)


def _register_shipped_as(tracking_uri: str, folder: Path, role: ModelRole, rules: DeferRules) -> RegisteredBundle:
    registered = log_onnx_bundle(tracking_uri, folder, source="shipped", rules=rules)
    set_alias(tracking_uri, registered.name, role, registered.version)
    log.info("registered shipped model %s version %s as %s", registered.name, registered.version, role.value)
    return registered


def register_updated_shipped_bundles(
    tracking_uri: str, models_dir: Path = SHIPPED_MODELS_DIR, *, rules: DeferRules | None = None
) -> list[RegisteredBundle]:
    """After an upgrade: each shipped bundle that no registered version carries (by ``bundle_sha256``) becomes a new
    version with alias ``challenger``; the champion stays until an ML engineer promotes the challenger through the
    gate (``medscreen quality promote``), as with a retrained model. A model with no version yet gets version 1 as champion, as on first
    start. Versions registered before the digest tag existed carry none, so an unchanged bundle is registered once more.
    """
    rules = rules or DeferRules()
    first = {item.name: item for item in register_shipped_bundles(tracking_uri, models_dir, rules=rules) if item.newly_registered}
    client = registry_client(tracking_uri)
    results: list[RegisteredBundle] = []
    for task in TASKS:
        folder = Path(models_dir) / task
        try:
            name = read_bundle(folder).bundle["model_name"]
        except FileNotFoundError:
            continue  # register_shipped_bundles has warned
        if name in first:
            results.append(first[name])
            continue
        digest = bundle_digest(folder)
        same = [v for v in client.search_model_versions(filter_string=f"name = '{name}'") if v.tags.get("bundle_sha256") == digest]
        results.append(_newest(name, same) if same else _register_shipped_as(tracking_uri, folder, ModelRole.challenger, rules))
    return results


def load_champion(tracking_uri: str, name: str, dest: Path) -> ChampionBundle:
    """Download the ``champion`` version of ``name`` to ``dest``; its ONNX path, I/O contract and threshold."""
    import yaml

    version = alias_version(tracking_uri, name, ModelRole.champion)
    if version is None:
        raise LookupError(f"{name} has no {ModelRole.champion.value} version")
    local = download_version(tracking_uri, name, version.version, dest, run_id=version.run_id or None)
    meta = yaml.safe_load((local / "MLmodel").read_text()).get("metadata", {})
    bundle = meta.get("bundle", {})
    threshold = float(version.tags.get("threshold", bundle.get("threshold", 0.5)))
    return ChampionBundle(name, version.version, local / "model.onnx", bundle, threshold)
