"""Preprocessed arrays cached on disk (``$MEDSCREEN_HOME/cache/training``): decoding 5,000 JPEGs once is enough."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

__all__ = ["cached_arrays"]

log = logging.getLogger(__name__)


def cached_arrays(cache_dir: Path | None, key: dict, build: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """``build()`` once per ``key`` (file list, sizes, code version), then read back from an ``.npz``."""
    if cache_dir is None:
        return build()
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{key.get('name', 'arrays')}-{digest}.npz"
    if path.is_file():
        with np.load(path) as data:
            log.info("using cached arrays %s", path)
            return {k: data[k] for k in data.files}
    arrays = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, allow_pickle=False, **arrays)
    tmp.replace(path)
    return arrays
