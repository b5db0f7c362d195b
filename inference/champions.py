"""Which model version scores each task: the ``champion`` alias in the MLflow Model Registry (and ``challenger``).

The worker polls the registry; a promoted champion is picked up without a restart. A job is bound to the
version chosen when it was queued, so a study is never half-scored by two versions. Downloaded versions
are cached by (name, version) under the data directory, with their ONNX Runtime session.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnxruntime as ort

from inference.errors import ModelUnavailable

__all__ = ["LoadedModel", "ModelSelector", "CHAMPION", "CHALLENGER"]

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
TASK_MODELS = {"chest-xray": "chest-xray", "mammography": "mammography", "ct-chest": "ct-chest"}


@dataclass(frozen=True)
class LoadedModel:
    task: str
    name: str
    version: str
    run_id: str | None
    threshold: float
    bundle: dict[str, Any]
    session: ort.InferenceSession = field(repr=False, compare=False)

    def run(self, inputs: Any) -> dict[str, Any]:
        names = [o.name for o in self.session.get_outputs()]
        values = self.session.run(None, {self.bundle["input"]["name"]: inputs})
        return dict(zip(names, values, strict=True))


class ModelSelector:
    def __init__(self, tracking_uri: str, cache_dir: Path, *, intra_op_threads: int, refresh_s: float) -> None:
        self.tracking_uri = tracking_uri
        self.cache_dir = cache_dir
        self.intra_op_threads = intra_op_threads
        self.refresh_s = refresh_s
        self._aliases: dict[tuple[str, str], tuple[str, str | None]] = {}  # (task, role) -> (version, run id)
        self._loaded: dict[tuple[str, str], LoadedModel] = {}
        self._checked_at = 0.0
        self._lock = threading.Lock()
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri, tracking_uri)

    def refresh(self, *, force: bool = False) -> dict[tuple[str, str], str]:
        """Re-read the aliases (at most every ``refresh_s``); returns {(task, role): version}."""
        with self._lock:
            if not force and time.monotonic() - self._checked_at < self.refresh_s:
                return {key: value[0] for key, value in self._aliases.items()}
            aliases: dict[tuple[str, str], tuple[str, str | None]] = {}
            for task, name in TASK_MODELS.items():
                for role in (CHAMPION, CHALLENGER):
                    try:
                        version = self.client.get_model_version_by_alias(name, role)
                    except Exception:  # noqa: BLE001 - MLflow raises MlflowException or RestException for "no alias"
                        continue
                    aliases[(task, role)] = (str(version.version), version.run_id)
            for key, value in aliases.items():
                if self._aliases.get(key) != value:
                    log.info("model registry: %s %s is %s version %s", key[0], key[1], TASK_MODELS[key[0]], value[0])
            self._aliases = aliases
            self._checked_at = time.monotonic()
            return {key: value[0] for key, value in aliases.items()}

    def version_for(self, task: str, role: str) -> str | None:
        entry = self._aliases.get((task, role))
        return entry[0] if entry else None

    def load(self, task: str, version: str) -> LoadedModel:
        """The ONNX session of one registered version (downloaded once, then cached)."""
        name = TASK_MODELS[task]
        key = (name, version)
        with self._lock:
            if key in self._loaded:
                return self._loaded[key]
        try:
            import mlflow
            import yaml

            details = self.client.get_model_version(name, version)
            dest = self.cache_dir / name / version
            if not any(dest.rglob("MLmodel")):
                dest.mkdir(parents=True, exist_ok=True)
                mlflow.set_tracking_uri(self.tracking_uri)
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=str(dest))
            model_dir = next(dest.rglob("MLmodel")).parent
            meta = yaml.safe_load((model_dir / "MLmodel").read_text()).get("metadata", {})
            bundle = meta.get("bundle") or {}
            threshold = float(details.tags.get("threshold", bundle.get("threshold", 0.5)))
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.intra_op_threads
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(model_dir / "model.onnx"), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - any failure to fetch or open a model is "unavailable, retry"
            raise ModelUnavailable(f"cannot load {name} version {version}: {type(exc).__name__}: {exc}") from exc
        loaded = LoadedModel(task, name, version, details.run_id, threshold, bundle, session)
        with self._lock:
            self._loaded[key] = loaded
        return loaded
