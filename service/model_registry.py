"""The MLflow Model Registry as every package sees it: versions, their tags and the aliases of ``ModelRole``.

MLflow is a platform service (imaging models and the screener alike), so the alias rules live here once:
``champion`` scores and steers, ``challenger`` is scored in shadow, ``previous-champion`` is where a
promotion leaves the version it replaced, so a rollback needs no memory of its own (a rollback leaves it there, on the
champion it brought back). Torch-free; MLflow is imported inside the functions so that importing this module costs
nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from service.durable_files import fsync_dir, fsync_file
from service.errors import SteeringRefused
from service.lifecycle import ModelRole, SteeringRight
from service.steering import DEFAULT_RIGHT, DeferRules, SteeringEvidence, defer_refusals, development_right

__all__ = [
    "RegisteredVersion",
    "artifact_root_for",
    "ensure_experiment",
    "ensure_registered_model",
    "registry_client",
    "alias_version",
    "set_alias",
    "clear_alias",
    "list_versions",
    "version_of",
    "set_version_tags",
    "move_champion",
    "roll_back_champion",
    "download_version",
    "steering_of",
    "set_steering",
    "check_steering_earned",
    "lesser_right",
    "served_right",
    "ServingRights",
    "serving_rights",
    "STEERING_TAG",
    "STEERING_EVIDENCE_TAG",
    "STEERING_GRANT_TAG",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegisteredVersion:
    """One registered model version with its aliases and tags (threshold, metrics, steering right, ...)."""

    name: str
    version: str
    run_id: str
    aliases: tuple[str, ...] = ()
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def steering(self) -> SteeringRight:
        return steering_of(self)

    def float_tag(self, key: str) -> float | None:
        try:
            return float(self.tags[key])
        except (KeyError, ValueError):
            return None


def registry_client(tracking_uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri, tracking_uri)


def artifact_root_for(tracking_uri: str) -> str | None:
    """Artifacts beside a sqlite store (``<dir>/mlartifacts``); MLflow's default would be ``./mlruns`` of the cwd."""
    parsed = urlparse(tracking_uri)
    if parsed.scheme == "sqlite":
        db_path = Path(tracking_uri.split("sqlite:///", 1)[1])
        return (db_path.parent / "mlartifacts").resolve().as_uri()
    return None


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The experiment id of ``name``, created with its artifacts beside the store when new."""
    import mlflow

    from service.registry_relocation import relocate_artifact_root

    if urlparse(tracking_uri).scheme == "sqlite":
        Path(tracking_uri.split("sqlite:///", 1)[1]).parent.mkdir(parents=True, exist_ok=True)
        # A store restored on another path: what is logged now goes beside it, not under the old home.
        relocate_artifact_root(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    client = registry_client(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return str(experiment.experiment_id)
    root = artifact_root_for(tracking_uri)
    location = f"{root}/{name}" if root else None
    return str(client.create_experiment(name, artifact_location=location))


def ensure_registered_model(tracking_uri: str, name: str, *, tags: dict[str, str] | None = None, description: str = "") -> None:
    client = registry_client(tracking_uri)
    if not client.search_registered_models(filter_string=f"name = '{name}'"):
        client.create_registered_model(name, tags=tags or {}, description=description or None)


def _row(version: Any, aliases: tuple[str, ...] = ()) -> RegisteredVersion:
    return RegisteredVersion(
        str(version.name), str(version.version), str(version.run_id or ""),
        tuple(sorted(set(aliases) | set(getattr(version, "aliases", None) or ()))), dict(version.tags or {}),
    )


# What MLflow answers for a model, version or alias it does not hold (a missing alias is INVALID_PARAMETER_VALUE).
# Anything else (a locked or corrupt store, a tracking server down) means the registry could not be read, and is
# raised: read as "none", a store locked while a champion's result was stored made it a previous champion's result
# (no SR, steering nothing) and the study was marked scored by it.
_NOT_HELD = frozenset({"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"})


def _not_held(exc: Any) -> bool:
    return getattr(exc, "error_code", None) in _NOT_HELD


def alias_version(tracking_uri: str, name: str, role: ModelRole, *, client: Any = None) -> RegisteredVersion | None:
    """The version ``role`` points at, or None when the alias (or the model) does not exist; MlflowException when the
    registry cannot be read."""
    from mlflow.exceptions import MlflowException

    client = client or registry_client(tracking_uri)
    try:
        return _row(client.get_model_version_by_alias(name, role.value))
    except MlflowException as exc:
        if _not_held(exc):
            return None
        raise


def version_of(tracking_uri: str, name: str, version: str) -> RegisteredVersion | None:
    """The registered version, or None when the registry does not hold it; MlflowException when it cannot be read."""
    from mlflow.exceptions import MlflowException

    try:
        return _row(registry_client(tracking_uri).get_model_version(name, str(version)))
    except MlflowException as exc:
        if _not_held(exc):
            return None
        raise


def set_alias(tracking_uri: str, name: str, role: ModelRole, version: str) -> None:
    registry_client(tracking_uri).set_registered_model_alias(name, role.value, str(version))


def clear_alias(tracking_uri: str, name: str, role: ModelRole) -> None:
    from mlflow.exceptions import MlflowException

    try:
        registry_client(tracking_uri).delete_registered_model_alias(name, role.value)
    except MlflowException:
        log.debug("%s has no %s alias to clear", name, role.value)


def set_version_tags(tracking_uri: str, name: str, version: str, tags: dict[str, str]) -> None:
    client = registry_client(tracking_uri)
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, value)


def list_versions(tracking_uri: str) -> list[RegisteredVersion]:
    """Every version of every registered model, with its aliases, ordered by (name, version)."""
    client = registry_client(tracking_uri)
    rows = []
    for model in client.search_registered_models():
        aliases_by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items():
            aliases_by_version.setdefault(str(version), []).append(alias)
        for version in client.search_model_versions(filter_string=f"name = '{model.name}'"):
            row = _row(version, tuple(aliases_by_version.get(str(version.version), [])))
            if "task" not in row.tags and "task" in (model.tags or {}):
                row.tags["task"] = model.tags["task"]
            rows.append(row)
    rows.sort(key=lambda r: (r.name, int(r.version)))
    return rows


def move_champion(tracking_uri: str, name: str, version: str, *, rules: DeferRules | None = None) -> str | None:
    """Make ``version`` champion; the replaced version becomes ``previous-champion`` and a challenger alias on
    ``version`` is cleared. Returns the replaced version (None when there was none or it was the same).

    A version recorded as ``defer`` without the evidence that earns it is refused (SteeringRefused)."""
    candidate = version_of(tracking_uri, name, version)
    if candidate is not None:
        check_steering_earned(candidate, rules or DeferRules())
    current = alias_version(tracking_uri, name, ModelRole.champion)
    set_alias(tracking_uri, name, ModelRole.champion, version)
    previous = current.version if current is not None and current.version != str(version) else None
    if previous is not None:
        set_alias(tracking_uri, name, ModelRole.previous_champion, previous)
    challenger = alias_version(tracking_uri, name, ModelRole.challenger)
    if challenger is not None and challenger.version == str(version):
        clear_alias(tracking_uri, name, ModelRole.challenger)
    return previous


def roll_back_champion(tracking_uri: str, name: str, *, rules: DeferRules | None = None) -> tuple[str, str] | None:
    """Point ``champion`` back at ``previous-champion``, the version the last promotion replaced; returns (from, to),
    or None when there is nothing to roll back: either alias is missing, or the champion already is that version.

    ``previous-champion`` stays where the promotion left it, on the version brought back, so a second rollback (a
    retry, a second team member, a script run twice) finds the champion already there and moves nothing. The two
    aliases had been swapped: the withdrawn version then held ``previous-champion``, and a second rollback made it
    champion again, without the gate and audited as a rollback. A withdrawn version comes back only through a
    promotion, which runs the gate. The withdrawn version holds no alias, so it is neither scored nor steers.

    Never refused (it is the emergency brake), but the version brought back keeps ``defer`` only while its evidence
    earns it under ``rules`` (the site's ``MEDSCREEN_STEERING_DEFER_*``; the defaults when None): otherwise its
    recorded right is lowered to what it earns, with a WARNING, so the registry says what the workers serve."""
    current = alias_version(tracking_uri, name, ModelRole.champion)
    previous = alias_version(tracking_uri, name, ModelRole.previous_champion)
    if current is None or previous is None:
        return None
    if current.version == previous.version:
        log.warning(
            "%s: champion is already v%s, the version the last promotion replaced: nothing to roll back (a version a "
            "rollback withdrew comes back only through promotion, which runs the gate)", name, current.version,
        )
        return None
    right, unearned = served_right(previous, rules or DeferRules())
    if unearned is not None:
        log.warning("rollback of %s to v%s: %s", name, previous.version, unearned)
        set_steering(tracking_uri, name, previous.version, right, evidence=None, rules=rules or DeferRules())
    set_alias(tracking_uri, name, ModelRole.champion, previous.version)
    return current.version, previous.version


def download_version(tracking_uri: str, name: str, version: str, dest: Path, *, run_id: str | None = None) -> Path:
    """Download a version's model once into ``dest``; returns the folder holding its ``MLmodel``.

    The download goes to a temporary folder beside ``dest``, its files are fsynced, and the folder is renamed to
    ``dest`` only once complete: MLflow copies the artifacts in parallel, so a download cut short (a full disk, a
    kill) had left a complete ``MLmodel`` beside an empty or truncated ``model.onnx`` in ``dest``, taken for a
    complete download by every later load, and the task failed every study until the folder was deleted by hand.
    A lock file beside ``dest`` lets one process (of the workers sharing the cache) download at a time, and lets it
    remove the temporary folders of downloads killed before they finished.

    With ``run_id`` (the version's, from the registry), a ``dest`` already holding a model of another run (another
    store's version of the same number, a recreated store) is emptied and downloaded again: its network would have
    been served under this version's name, run, threshold and steering right."""
    import fcntl
    import shutil
    import tempfile

    import mlflow
    import yaml

    dest.parent.mkdir(parents=True, exist_ok=True)
    with (dest.parent / f".{dest.name}.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        cached = next(dest.rglob("MLmodel"), None) if dest.is_dir() else None
        if cached is not None and run_id:
            cached_run = (yaml.safe_load(cached.read_text()) or {}).get("run_id")
            if cached_run != run_id:
                log.warning("model cache %s holds run %s, not %s v%s's run %s: downloading again", dest, cached_run,
                            name, version, run_id)
                cached = None
        if cached is None:
            # No lock holder is downloading: a temporary folder left here is a killed download's.
            for stale in dest.parent.glob(f".{dest.name}.partial-*"):
                shutil.rmtree(stale, ignore_errors=True)
            if dest.exists():
                shutil.rmtree(dest)
            partial = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
            try:
                mlflow.set_tracking_uri(tracking_uri)
                # A models:/ URI is resolved in the registry MLflow holds globally, which MLFLOW_REGISTRY_URI in the
                # environment sets: left so, a process started with another store's URI there (MLflow writes it
                # into os.environ, and children inherit it) downloaded that store's version of the name, or none.
                mlflow.set_registry_uri(tracking_uri)
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(partial))
                if next(partial.rglob("MLmodel"), None) is None:
                    raise FileNotFoundError(f"{name} v{version}: the download holds no MLmodel")
                _owner_only_tree(partial)
                _fsync_tree(partial)
                partial.rename(dest)
                fsync_dir(dest.parent)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    return next(dest.rglob("MLmodel")).parent


def _owner_only_tree(root: Path) -> None:
    """Every file and folder under ``root`` owner-only, as everything under the home is (``service/file_modes.py``).

    The umask does not reach these: MLflow copies a local store's artifacts with their modes (``shutil.copy2``), so a
    store written under another umask gave the cache group- and world-readable files."""
    for path in root.rglob("*"):
        if path.is_symlink():
            continue
        path.chmod(0o700 if path.is_dir() else path.stat().st_mode & 0o700)


def _fsync_tree(root: Path) -> None:
    """Every file and folder under ``root`` on disk, so that a power cut after the rename leaves no empty file."""
    for path in sorted(root.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if path.is_dir():
            fsync_dir(path)
        elif path.is_file():
            fsync_file(path)
    fsync_dir(root)


# Version tags holding the steering right and the evidence it was granted on.
STEERING_TAG = "steering"
STEERING_EVIDENCE_TAG = "steering_evidence"
# Who granted the recorded right through quality review (an audited action), when a reviewer did.
STEERING_GRANT_TAG = "steering_granted_by"


def steering_of(version: RegisteredVersion) -> SteeringRight:
    """The version's recorded steering right; ``shadow`` (``DEFAULT_RIGHT``) when none, or an unknown value, is recorded."""
    try:
        return SteeringRight(version.tags.get(STEERING_TAG, DEFAULT_RIGHT.value))
    except ValueError:
        return DEFAULT_RIGHT


def set_steering(
    tracking_uri: str, name: str, version: str, right: SteeringRight, *, evidence: SteeringEvidence | None,
    rules: DeferRules, granted_by: str | None = None,
) -> None:
    """Record ``right`` with the version; ``defer`` is refused unless ``evidence`` earns it under ``rules``.

    ``granted_by``: the account of a quality reviewer granting it (``quality.steering.grant_steering``, audited); a
    right recorded without one is what registration derived from the version's figures, and is served only while
    those figures earn it (:func:`served_right`)."""
    if right == SteeringRight.defer:
        refusals = defer_refusals(evidence, rules)
        if refusals:
            raise SteeringRefused(f"{name} v{version} cannot defer studies: " + "; ".join(refusals))
    tags = {STEERING_TAG: right.value}
    if evidence is not None:
        tags[STEERING_EVIDENCE_TAG] = evidence.to_json()
    if granted_by:
        tags[STEERING_GRANT_TAG] = granted_by
    set_version_tags(tracking_uri, name, version, tags)


def check_steering_earned(version: RegisteredVersion, rules: DeferRules) -> None:
    """Refuse (SteeringRefused) a version that claims ``defer`` without evidence earning it under ``rules``."""
    if steering_of(version) != SteeringRight.defer:
        return
    evidence = SteeringEvidence.from_json(version.tags.get(STEERING_EVIDENCE_TAG))
    refusals = defer_refusals(evidence, rules)
    if refusals:
        raise SteeringRefused(f"{version.name} v{version.version} is recorded as defer without the evidence: " + "; ".join(refusals))


_RIGHTS_ORDER = (SteeringRight.shadow, SteeringRight.raise_only, SteeringRight.defer)


def lesser_right(*rights: SteeringRight) -> SteeringRight:
    """The least of ``rights`` (shadow < raise-only < defer)."""
    return min(rights, key=_RIGHTS_ORDER.index)


@dataclass(frozen=True)
class ServingRights:
    """What the registry lets each model version steer now, read once for a worklist pass: a right lowered or
    revoked after a result was stored applies to that result's study too, not only to the next job."""

    rights: Mapping[tuple[str, str], SteeringRight] = field(default_factory=dict)
    # Registered model name -> the version its ``champion`` alias names now.
    champions: Mapping[str, str] = field(default_factory=dict)

    def right_of(self, name: str, version: str) -> SteeringRight:
        """The version's right now; a version the registry no longer holds steers nothing."""
        return self.rights.get((name, str(version)), DEFAULT_RIGHT)

    def is_champion(self, name: str, version: str) -> bool:
        """Whether the version is its model's champion now: only the champion's results steer."""
        return self.champions.get(name) == str(version)


def serving_rights(tracking_uri: str, rules: DeferRules) -> ServingRights:
    """The right every registered version may steer with now (:func:`served_right` under the site's ``rules``), and
    each model's champion."""
    rows = list_versions(tracking_uri)
    return ServingRights(
        {(row.name, row.version): served_right(row, rules)[0] for row in rows},
        {row.name: row.version for row in rows if ModelRole.champion.value in row.aliases},
    )


def served_right(version: RegisteredVersion, rules: DeferRules) -> tuple[SteeringRight, str | None]:
    """The right a version may steer with now, and why it is less than the one recorded (None when it is not).

    ``defer`` is served only while the evidence recorded with the version earns it under the site's ``rules`` now: a
    tag set by hand in MLflow, a grant under thresholds the site has since raised, or a version a rollback brings
    back would otherwise defer negatives that no validation backs. Such a version gets what its development figures
    (the ``val_auroc_ci_low``, ``n_val`` and ``n_val_positive`` tags) earn: raise-only at most, shadow without them.
    """
    recorded = steering_of(version)
    try:
        check_steering_earned(version, rules)
    except SteeringRefused as exc:
        earned = _figures_right(version)
        return earned, f"{exc}; served as {earned.value}"
    if recorded == SteeringRight.raise_only and STEERING_GRANT_TAG not in version.tags:
        # Recorded at registration, perhaps by an earlier release under looser rules (every chest training run had
        # been given raise-only, one trained on 8 films among them): served only while its figures earn it now.
        # A reviewer's audited grant stands on its own.
        earned = _figures_right(version)
        if earned == SteeringRight.shadow:
            return earned, (
                f"{version.name} v{version.version} is recorded as raise-only, which its development figures do not "
                "earn under this release's rules; served as shadow"
            )
    return recorded, None


def _figures_right(version: RegisteredVersion) -> SteeringRight:
    auroc_ci_low, n, n_positive = (version.float_tag(key) for key in ("val_auroc_ci_low", "n_val", "n_val_positive"))
    if auroc_ci_low is None or n is None or n_positive is None:
        return SteeringRight.shadow
    return SteeringRight(development_right(auroc_ci_low, int(n), int(n_positive))["right"])
