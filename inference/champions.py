"""Which model version scores each task: the ``champion`` alias in the MLflow Model Registry (and ``challenger``).

The worker polls the registry; a promoted champion is picked up without a restart. A job is bound to the
version chosen when it was queued, so a study is never half-scored by two versions; the version's steering right
is read from the registry for every job, so a lowered right binds the next one. Downloaded versions
are cached under the data directory by store, name, version and run id (a cache keyed by name and version alone
served another store's, or a recreated store's, version N with the old network), with their ONNX Runtime session.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inference.errors import BundleInvalid, ModelUnavailable, OnnxUnreadable
from inference.intended_use import IntendedUse
from inference.model_contract import check_contract, check_threshold, open_session
from inference.shipped_models import shipped_intended_use
from service.lifecycle import ModelRole, SteeringRight, Task
from service.model_registry import (
    RegisteredVersion,
    alias_version,
    download_version,
    lesser_right,
    registry_client,
    served_right,
    steering_of,
    version_of,
)
from service.steering import DEFAULT_RIGHT, DeferRules
from service.url_credentials import hide_url_credentials

__all__ = ["ChampionWatch", "LoadedModel", "ModelSelector", "SCORING_ROLES"]

log = logging.getLogger(__name__)

# The roles that get scoring jobs: the champion steers, a challenger is scored in shadow.
SCORING_ROLES = (ModelRole.champion, ModelRole.challenger)


@dataclass(frozen=True)
class LoadedModel:
    task: str
    name: str
    version: str
    run_id: str | None
    threshold: float
    bundle: dict[str, Any]
    session: ort.InferenceSession = field(repr=False, compare=False)
    # Recorded with the version in the registry; a version without one (or an unknown value) is shadow.
    steering: SteeringRight = DEFAULT_RIGHT

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}"

    @property
    def intended_use(self) -> IntendedUse | None:
        return IntendedUse.from_bundle(self.bundle)

    def run(self, inputs: Any) -> dict[str, Any]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(None, {self.bundle["input"]["name"]: inputs})
        return dict(zip(names, values, strict=True))


class ModelSelector:
    def __init__(
        self, tracking_uri: str, cache_dir: Path, *, intra_op_threads: int, refresh_s: float,
        defer_rules: DeferRules | None = None,
    ) -> None:
        self.tracking_uri = tracking_uri
        # The site's MEDSCREEN_STEERING_DEFER_* (service.steering.defer_rules_from_settings); the defaults when None.
        self.defer_rules = defer_rules or DeferRules()
        self.cache_dir = cache_dir
        self.intra_op_threads = intra_op_threads
        self.refresh_s = refresh_s
        self._aliases: dict[tuple[Task, ModelRole], tuple[str, str]] = {}  # (task, role) -> (version, run id)
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._checked_at = 0.0
        self._lock = threading.Lock()
        self.client = registry_client(tracking_uri)

    def refresh(self, *, force: bool = False) -> dict[tuple[Task, ModelRole], str]:
        """Re-read the aliases (at most every ``refresh_s``); returns {(task, role): version}."""
        with self._lock:
            if not force and time.monotonic() - self._checked_at < self.refresh_s:
                return {key: value[0] for key, value in self._aliases.items()}
            aliases: dict[tuple[Task, ModelRole], tuple[str, str]] = {}
            for task in Task:
                for role in SCORING_ROLES:
                    # The registered model of a task is named after the task.
                    version = alias_version(self.tracking_uri, task.value, role, client=self.client)
                    if version is not None:
                        aliases[(task, role)] = (version.version, version.run_id)
            for key, value in aliases.items():
                if self._aliases.get(key) != value:
                    log.info("model registry: %s %s is version %s", key[0].value, key[1].value, value[0])
            self._aliases = aliases
            self._checked_at = time.monotonic()
            return {key: value[0] for key, value in aliases.items()}

    def champion_now(self, task: str) -> str | None:
        """The version the task's ``champion`` alias names now, read from the registry (never the cached aliases):
        asked when a champion job's result is stored, as a rollback may have replaced the version it was bound to."""
        return self.version_now(task, ModelRole.champion)

    def version_now(self, task: str, role: ModelRole) -> str | None:
        """The version the task's ``role`` alias names now, read from the registry; ModelUnavailable when it cannot
        be read."""
        try:
            version = alias_version(self.tracking_uri, Task(task).value, role, client=self.client)
        except Exception as exc:  # noqa: BLE001 - a registry that cannot be read is "unavailable, retry"
            raise ModelUnavailable(f"cannot read the {task} {role.value}: {type(exc).__name__}: {exc}") from exc
        return None if version is None else version.version

    def version_for(self, task: str, role: ModelRole) -> str | None:
        entry = self._aliases.get((Task(task), role))
        return entry[0] if entry else None

    def version_cache_dir(self, name: str, version: str, run_id: str) -> Path:
        """Where a version's download is kept: per store (a digest of its URI), name, version and run."""
        store = hashlib.sha256(self.tracking_uri.encode()).hexdigest()[:16]
        return self.cache_dir / store / name / f"{version}-{run_id or 'no-run'}"

    def load(self, task: str, version: str, *, defer_rules: DeferRules | None = None) -> LoadedModel:
        """The ONNX session of one registered version (downloaded and opened once), with the steering right it may
        use now: the one the registry records, except a ``defer`` its evidence does not earn under ``defer_rules``
        (the selector's when None), served as what it earns (``service.model_registry.served_right``).

        The version's tags are read again on every load (one registry query, about 10 ms beside inference): a
        right lowered or revoked through quality review must bind the next job, not the next worker restart."""
        name = Task(task).value
        key = (name, version)
        with self._lock:
            cached = self._loaded.get(key)
        try:
            details = version_of(self.tracking_uri, name, version)
        except Exception as exc:  # noqa: BLE001 - a registry that cannot be read is "unavailable, retry"
            if cached is None:
                raise ModelUnavailable(f"cannot read {name} version {version}: {type(exc).__name__}: {exc}") from exc
            # The model itself is at hand; only its right is unknown, and defer is never served unconfirmed.
            right = lesser_right(cached.steering, SteeringRight.raise_only)
            log.warning("model registry unreadable (%s); %s served as %s until it is read again", type(exc).__name__,
                        cached.label, right.value)
            return replace(cached, steering=right)
        if details is None:
            raise ModelUnavailable(f"cannot load {name} version {version}: it is not registered")
        if cached is None or cached.run_id != details.run_id:
            cached = self._open(task, name, version, details)
        right, unearned = served_right(details, defer_rules or self.defer_rules)
        if right != cached.steering:
            if unearned is not None:
                log.warning("model registry: %s", unearned)
            else:
                log.info("model registry: %s steering right is now %s (was %s)", cached.label, right.value,
                         cached.steering.value)
            cached = replace(cached, steering=right)
        with self._lock:
            self._loaded[key] = cached
        return cached

    def _open(self, task: str, name: str, version: str, details: RegisteredVersion) -> LoadedModel:
        """Download a version once and open its ONNX session.

        A cached folder that cannot be opened is removed and downloaded once more: downloads are renamed into place
        only when complete (``download_version``), but a folder an earlier release wrote may hold a cut download
        (a complete ``MLmodel`` beside an empty ``model.onnx``), and it had failed every study of the task."""
        cache = self.version_cache_dir(name, version, details.run_id)
        was_cached = cache.is_dir()
        try:
            return self._open_from(task, name, version, details, cache)
        except BundleInvalid as exc:
            if not was_cached or not isinstance(exc, OnnxUnreadable):
                # The version itself is bad (opened whole, it is not the model its bundle describes): a new
                # download would fetch the same files.
                raise ModelUnavailable(f"cannot load {name} version {version}: {exc.reason}") from exc
            log.warning("model cache %s cannot be opened (%s): removed, downloading %s v%s again", cache, exc.reason,
                        name, version)
        except Exception as exc:  # noqa: BLE001 - any failure to fetch or open a model is "unavailable, retry"
            if not was_cached:
                raise ModelUnavailable(f"cannot load {name} version {version}: {type(exc).__name__}: {exc}") from exc
            log.warning("model cache %s cannot be opened (%s: %s): removed, downloading %s v%s again", cache,
                        type(exc).__name__, exc, name, version)
        shutil.rmtree(cache, ignore_errors=True)
        try:
            return self._open_from(task, name, version, details, cache)
        except BundleInvalid as exc:
            raise ModelUnavailable(f"cannot load {name} version {version}: {exc.reason}") from exc
        except Exception as exc:  # noqa: BLE001 - as above
            raise ModelUnavailable(f"cannot load {name} version {version}: {type(exc).__name__}: {exc}") from exc

    def _open_from(self, task: str, name: str, version: str, details: RegisteredVersion, cache: Path) -> LoadedModel:
        import yaml

        model_dir = download_version(self.tracking_uri, name, version, cache, run_id=details.run_id or None)
        meta = (yaml.safe_load((model_dir / "MLmodel").read_text()) or {}).get("metadata") or {}
        bundle = meta.get("bundle")
        # The operating point the calls are made at: the version's tag (which quality review may have set), else the
        # bundle's; one outside [0, 1] (a percentage typed into MLflow) had called every study negative.
        threshold_value = details.tags.get("threshold") or (bundle or {}).get("threshold", 0.5)
        session = open_session(str(model_dir / "model.onnx"), intra_op_threads=self.intra_op_threads)
        check_contract(bundle, session, threshold_value)
        bundle = dict(bundle or {})
        if "intended_use" not in bundle:
            # A version registered without one is held to the shipped bundle's population, never to none.
            bundle["intended_use"] = shipped_intended_use(task)
        return LoadedModel(task, name, version, details.run_id, check_threshold(threshold_value), bundle, session,
                           steering_of(details))


class ChampionWatch:
    """Which tasks have no loadable champion, for ``/healthz``: checked by ``medscreen serve``'s background thread,
    never per probe (a registry behind a refused connection takes MLflow's client about 250 s to give up).

    ``register`` (the shipped bundles into an empty registry) runs first and is retried, with a backoff doubling up
    to ``retry_max_s``, until it succeeds: it had run once, before the receivers started, so a tracking server not
    up yet kept the DICOM port closed for minutes, and on a first start no model was ever registered. Until a check
    has run, every task counts as without a champion. Each champion is loaded (downloaded into the cache the
    workers share, and opened) once per version; later checks read the aliases and the version's tags."""

    def __init__(
        self, selector: ModelSelector, *, register: Callable[[], None] | None = None, interval_s: float = 30.0,
        retry_first_s: float = 5.0, retry_max_s: float = 300.0,
    ) -> None:
        self.selector = selector
        self.register = register
        self.interval_s = interval_s
        self.retry_first_s = retry_first_s
        self.retry_max_s = retry_max_s
        first = "the shipped models are not registered yet" if register is not None else "not checked yet"
        self._problems: dict[str, str] = {task.value: first for task in Task}
        self._lock = threading.Lock()

    def problems(self) -> dict[str, str]:
        """{task: why it has no loadable champion}; empty when every task has one."""
        with self._lock:
            return dict(self._problems)

    def _set(self, problems: dict[str, str]) -> None:
        with self._lock:
            before, self._problems = self._problems, problems
        for task, reason in problems.items():
            if before.get(task) != reason:
                log.warning("task %s has no loadable champion: %s", task, reason)
        for task in before.keys() - problems.keys():
            log.info("task %s has a loadable champion again", task)

    def check_once(self) -> dict[str, str]:
        problems: dict[str, str] = {}
        for task in Task:
            try:
                version = alias_version(self.selector.tracking_uri, task.value, ModelRole.champion,
                                        client=self.selector.client)
            except Exception as exc:  # noqa: BLE001 - an unreadable registry is reported, and read again next time
                # /healthz shows this without a login: MLflow's message quotes the tracking URI, password and all.
                problems[task.value] = hide_url_credentials(f"the model registry cannot be read: {type(exc).__name__}: {exc}")
                continue
            if version is None:
                problems[task.value] = f"no {ModelRole.champion.value} registered for {task.value}"
                continue
            try:
                self.selector.load(task.value, version.version)
            except ModelUnavailable as exc:
                problems[task.value] = exc.reason
        self._set(problems)
        return problems

    def run_until(self, stop: threading.Event) -> None:
        delay = self.retry_first_s
        while self.register is not None and not stop.is_set():
            try:
                self.register()
            except Exception as exc:  # noqa: BLE001 - ingest runs meanwhile; registration is retried until it succeeds
                reason = f"the shipped models are not registered yet: {type(exc).__name__}: {exc}"
                self._set({task.value: reason for task in Task})
                log.warning("could not register the shipped models in %s (%s: %s); retrying in %.0f s",
                            self.selector.tracking_uri, type(exc).__name__, exc, delay)
                if stop.wait(delay):
                    return
                delay = min(delay * 2, self.retry_max_s)
            else:
                self.register = None
        while not stop.is_set():
            try:
                self.check_once()
            except Exception:  # noqa: BLE001 - a check that fails is retried at the next interval
                log.exception("champion check failed")
            stop.wait(self.interval_s)
