"""A CT study's memory is bounded before any pixel is decoded: by the intended use (both pixel spacings, square
pixels, the largest matrix) and by the study budget (MEDSCREEN_MAX_STUDY_DECODED_MB) on what the headers ask the
volume and the candidate search to allocate. A few hundred kB of headers had taken the worker past 8 GB."""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import onnxruntime as ort
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from inference.assemble import read_study
from inference.champions import LoadedModel
from inference.errors import CouldNotScore, OutOfScope
from inference.intended_use import IntendedUse, check_intended_use
from inference.scorers import score_ct, score_task
from inference.shipped_models import SHIPPED_MODELS_DIR, read_bundle
from tests.inference.conftest import INFERENCE_FIXTURES

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))


def _ct_use() -> IntendedUse:
    use = IntendedUse.from_bundle(json.loads((SHIPPED_MODELS_DIR / "ct-chest" / "bundle.json").read_text()))
    assert use is not None
    return use


def _series(slices: int, side: int, spacing: list[float]) -> list[Dataset]:
    """Headers of an axial adult chest CT series (the real LIDC slice's), without pixel data: nothing may decode."""
    source = dcmread(CT[0], stop_before_pixels=True)
    study, series = generate_uid(), generate_uid()
    out = []
    for index in range(slices):
        ds = source.copy()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
        ds.Rows = ds.Columns = side
        ds.PixelSpacing = spacing
        ds.BodyPartExamined, ds.PatientAge = "CHEST", "060Y"
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0, 0, -1.25 * index]
        out.append(ds)
    return out


def _peak_while(call: Any) -> tuple[BaseException | None, int]:
    error: BaseException | None = None
    tracemalloc.start()
    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the refusal is what the tests look at
        error = exc
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return error, peak


def test_both_pixel_spacings_are_checked() -> None:
    # 0.5\1000 mm passed as 0.5 mm; the search grid, sized from each value, then took 2.9 GB for 10 slices.
    with pytest.raises(OutOfScope, match="pixel spacing 1000 mm outside 0.4-1 mm"):
        check_intended_use(_ct_use(), _series(10, 512, [0.5, 1000.0]), "ct-chest v1")


def test_pixels_far_from_square_are_out_of_scope() -> None:
    with pytest.raises(OutOfScope, match="far from square"):
        check_intended_use(_ct_use(), _series(10, 512, [0.5, 0.8]), "ct-chest v1")
    # A real reconstruction's slight difference (LIDC-IDRI: 0.545x0.597 mm) is in scope.
    assert len(check_intended_use(_ct_use(), _series(10, 512, [0.545455, 0.596847]), "ct-chest v1")) == 10


def test_a_ct_matrix_past_1024_is_out_of_scope() -> None:
    # The shipped bundle names no largest matrix: CT's default applies (40 slices of 4096x4096 had taken 4.4 GB).
    assert _ct_use().max_matrix == (1024, 1024)
    with pytest.raises(OutOfScope, match="image of 4096x4096 pixels; at most 1024x1024"):
        check_intended_use(_ct_use(), _series(40, 4096, [0.5, 0.5]), "ct-chest v1")
    assert len(check_intended_use(_ct_use(), _series(10, 1024, [0.4, 0.4]), "ct-chest v1")) == 10
    bundle = {"intended_use": {"modalities": ["CT"], "max_matrix": [2048, 2048]}}
    assert IntendedUse.from_bundle(bundle).max_matrix == (2048, 2048)  # type: ignore[union-attr]
    assert IntendedUse.from_bundle({"intended_use": {"modalities": ["DX"]}}).max_matrix is None  # type: ignore[union-attr]


@pytest.mark.parametrize(("slices", "side", "spacing"), [(10, 512, [0.5, 1000.0]), (100, 4096, [0.5, 0.5])])
def test_a_series_past_the_study_budget_could_not_be_scored_before_decoding(
    slices: int, side: int, spacing: list[float]
) -> None:
    # score_task has no intended-use gate (a challenger's bundle may name no bounds): the budget still holds.
    datasets = _series(slices, side, spacing)
    error, peak = _peak_while(lambda: score_task("ct-chest", None, datasets, min_ct_slices=3))  # type: ignore[arg-type]
    assert isinstance(error, CouldNotScore), error
    assert "MEDSCREEN_MAX_STUDY_DECODED_MB" in error.reason and f"{slices} slices of {side}x{side}" in error.reason
    assert peak < 20 << 20


def test_the_budget_is_the_setting_and_a_real_series_fits_the_default() -> None:
    datasets = read_study(CT)
    with pytest.raises(CouldNotScore, match="over the 1 MB study budget"):
        score_ct(None, datasets, min_ct_slices=3, max_decoded_mb=1)  # type: ignore[arg-type]
    # The real LIDC slices pass the default budget and are scored.
    shipped = read_bundle(SHIPPED_MODELS_DIR / "ct-chest")
    session = ort.InferenceSession(str(shipped.onnx_path), providers=["CPUExecutionProvider"])
    model = LoadedModel("ct-chest", "ct-chest", "shipped", None, float(shipped.bundle["threshold"]), shipped.bundle, session)
    assert 0.0 <= score_ct(model, datasets, min_ct_slices=3).score <= 1.0


def test_medscreen_score_holds_to_the_sites_budget(registered_store: Any, tmp_path: Any) -> None:
    """``medscreen score`` had scored with the default budget whatever MEDSCREEN_MAX_STUDY_DECODED_MB said."""
    import io
    import shutil

    from inference.champions import ModelSelector
    from inference.offline_score import collect_studies, score_offline
    from inference.route import load_rules

    shutil.copyfile(registered_store, tmp_path / "mlflow.db")
    selector = ModelSelector(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "cache", intra_op_threads=1, refresh_s=0)
    studies, _ = collect_studies(CT, progress=False)
    out = io.StringIO()
    score_offline(studies, load_rules(None), selector, out, min_ct_slices=3, progress=False, max_decoded_mb=1)
    (line,) = [json.loads(text) for text in out.getvalue().splitlines()]
    assert line["task"] == "ct-chest" and "over the 1 MB study budget" in (line["error"] or "")
