"""The heat-map of a result as PNG, for the radiologists' study view (read from the stored Secondary Capture)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from sqlalchemy.orm import Session

from inference.tables import ScoreResult, Study
from service.settings import Settings

__all__ = ["heatmap_png", "heatmap_path"]


def heatmap_path(settings: Settings, study_uid: str, sop_instance_uid: str) -> Path:
    return settings.spool_dir / "outgoing" / study_uid / f"{sop_instance_uid}.dcm"


def heatmap_png(session: Session, settings: Settings, score_result_id: int) -> bytes | None:
    """The burned-in overlay ("NOT FOR DIAGNOSTIC USE") as PNG, or None when the result has no heat-map."""
    result = session.get(ScoreResult, score_result_id)
    if result is None or not result.heatmap_sop_instance_uid:
        return None
    study = session.get(Study, result.study_id)
    if study is None:
        return None
    path = heatmap_path(settings, study.study_instance_uid, result.heatmap_sop_instance_uid)
    if not path.is_file():
        return None
    pixels = np.asarray(dcmread(path).pixel_array, dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="RGB" if pixels.ndim == 3 else "L").save(buffer, format="PNG")
    return buffer.getvalue()
