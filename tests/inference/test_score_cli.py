"""`medscreen score PATH...`: one JSON line per study, every study accounted for, a summary on stderr."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.study_factory import wrap_radiograph
from tests.conftest import FIXTURES, REPO

pytestmark = pytest.mark.integration
REQUIRED = {"study_instance_uid", "task", "score", "call", "model_name", "model_version", "localisation", "error"}


def _home(tmp_path: Path, registered_store: Path) -> str:
    """A home whose MLflow store holds the shipped bundles already, as on any start after the first: each command
    here had registered them anew in a fresh home (8-10 s of MLflow migrations and logging a run)."""
    home = tmp_path / "var"
    home.mkdir(exist_ok=True)
    if not (home / "mlflow.db").exists():
        shutil.copyfile(registered_store, home / "mlflow.db")
    return str(home)


def test_score_command_reports_every_study(tmp_path: Path, registered_store: Path) -> None:
    kermany = FIXTURES / "datasets" / "kermany" / "train"
    folder = tmp_path / "site-data"
    for index, image in enumerate(sorted((kermany / "PNEUMONIA").glob("*.jpeg"))[:2] + sorted((kermany / "NORMAL").glob("*.jpeg"))[:2]):
        wrap_radiograph(image, folder / f"cxr{index}.dcm", patient_id=f"P{index}")
    wrap_radiograph(sorted((kermany / "NORMAL").glob("*.jpeg"))[0], folder / "lateral.dcm", view_position="LL")
    (folder / "notes.txt").write_text("not a DICOM file")
    env = {**os.environ, "MEDSCREEN_HOME": _home(tmp_path, registered_store)}
    result = subprocess.run(
        [sys.executable, "-m", "medscreen", "--create-home", "score", str(folder), str(FIXTURES / "inference" / "images" / "dx_abdomen_ge.dcm")],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(lines) == 6 and all(REQUIRED <= set(line) for line in lines)
    scored = [line for line in lines if line["error"] is None]
    assert len(scored) == 4
    for line in scored:
        assert (line["task"], line["model_name"], line["model_version"]) == ("chest-xray", "chest-xray", "1")
        assert 0 <= line["score"] <= 1 and line["call"] == ("positive" if line["score"] >= line["threshold"] else "negative")
    errors = sorted(line["error"].split(":")[0] for line in lines if line["error"])
    # The lateral-only film is outside the chest model's validated views (PA/AP): not scored, with the reason.
    assert errors == ["not applicable", "out of scope"]
    assert "no PA/AP view" in next(line["error"] for line in lines if (line["error"] or "").startswith("out of scope"))
    # Progress bars are drawn on a terminal only (tests/medscreen/test_cli_signals_and_version.py), not into a pipe.
    assert "scoring studies" not in result.stderr and "files refused: 1 not-dicom" in result.stderr


@pytest.mark.timeout(120)
def test_routes_dry_run_groups_a_folder_like_score(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The routing dry-run reads folders through the same reader as `score`: studies by UID, refused files counted.
    from medscreen.cli import main

    folder = tmp_path / "site-data"
    kermany = FIXTURES / "datasets" / "kermany" / "train"
    wrap_radiograph(sorted((kermany / "NORMAL").glob("*.jpeg"))[0], folder / "a" / "cxr", patient_id="P1")
    (folder / "notes.txt").write_text("not a DICOM file")
    rules = REPO / "inference" / "default_routes.yaml"
    assert main(["routes", "test", str(rules), str(folder), str(FIXTURES / "inference" / "images" / "mg_ge_senographe.dcm"),
                 "--json", "-v"]) == 0
    captured = capsys.readouterr()
    tasks = sorted(str(json.loads(line)["task"]) for line in captured.out.splitlines())
    assert tasks == ["chest-xray", "mammography"]
    assert "notes.txt: would be refused" in captured.err and "1 files would be refused" in captured.err
    assert main(["routes", "test", str(rules), str(tmp_path / "missing")]) == 2  # a usage error, as in `score`
    assert "does not exist" in capsys.readouterr().err


def test_score_command_gives_the_in_process_scorers_result_on_the_same_files(tmp_path: Path, registered_store: Path) -> None:
    # What a site measures with `medscreen score` is what the service computes: the same score (to the six
    # places printed) and the same localisation, for every task, on real files wrapped as a PACS sends them.
    import onnxruntime as ort
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    from benchmarks.study_factory import wrap_mammogram
    from inference.champions import LoadedModel
    from inference.scorers import score_task
    from inference.shipped_models import SHIPPED_MODELS_DIR, read_bundle

    folder = tmp_path / "site-data"
    studies: dict[str, tuple[str, list[Path]]] = {}
    for index, image in enumerate(sorted((FIXTURES / "datasets" / "kermany" / "train").glob("*/*.jpeg"))):
        uid = generate_uid()
        studies[uid] = ("chest-xray", [wrap_radiograph(image, folder / "dx" / f"{index}.dcm", study_uid=uid, patient_id=f"C{index}")])
    mias = FIXTURES / "datasets" / "mias"
    uid = generate_uid()
    studies[uid] = ("mammography", [wrap_mammogram(mias / f"mdb00{n}.png", folder / "mg" / f"{n}.dcm", laterality=side, study_uid=uid,
                                                   patient_id="M1") for n, side in ((1, "L"), (2, "R"))])
    ct = sorted((FIXTURES / "datasets" / "lidc" / "small").rglob("*.dcm"))
    studies[str(dcmread(ct[0]).StudyInstanceUID)] = ("ct-chest", ct)
    env = {**os.environ, "MEDSCREEN_HOME": _home(tmp_path, registered_store), "MEDSCREEN_CT_MIN_SLICES": "3"}
    result = subprocess.run(
        [sys.executable, "-m", "medscreen", "--create-home", "score", "--quiet", str(folder), *map(str, ct)],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "\r" not in result.stderr and "Downloading artifacts" not in result.stderr  # --quiet: no progress bar, MLflow's included
    lines = {line["study_instance_uid"]: line for line in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == set(studies)
    models: dict[str, LoadedModel] = {}
    expected_steering = {"chest-xray": "raise-only", "mammography": "shadow", "ct-chest": "shadow"}
    for uid, (task, paths) in studies.items():
        if task not in models:
            shipped = read_bundle(SHIPPED_MODELS_DIR / task)
            session = ort.InferenceSession(str(shipped.onnx_path), providers=["CPUExecutionProvider"])
            models[task] = LoadedModel(task, task, "shipped", None, shipped.threshold, shipped.bundle, session)
        expected = score_task(task, models[task], [dcmread(p) for p in paths], min_ct_slices=3)
        line = lines[uid]
        assert line["error"] is None and line["task"] == task
        assert line["score"] == pytest.approx(expected.score, abs=1e-6), task
        assert line["call"] == ("positive" if expected.score >= models[task].threshold else "negative")
        # Each line says the version's right; the shipped mammography and CT versions are shadow, chest raise-only.
        assert line["steering"] == expected_steering[task], task
        assert (line["call_note"] is not None) == (task != "chest-xray"), task
        assert line["localisation"]["point"] == pytest.approx(expected.localisation["point"]), task


def test_an_age_is_assumed_only_when_asked_and_only_where_the_headers_give_none(tmp_path: Path, registered_store: Path) -> None:
    """A research set stripped of demographics is out of scope for the age-bounded chest model; the operator
    may state the age (--assume-age), which never overrides a header's, and each line says what was assumed."""
    from pydicom import dcmread

    kermany = FIXTURES / "datasets" / "kermany" / "train"
    folder = tmp_path / "research-set"
    unknown = wrap_radiograph(sorted((kermany / "NORMAL").glob("*.jpeg"))[0], folder / "no-age.dcm", patient_id="R1")
    adult = wrap_radiograph(sorted((kermany / "NORMAL").glob("*.jpeg"))[1], folder / "adult.dcm", patient_id="R2",
                            patient_age="064Y")
    ds = dcmread(unknown)
    del ds.PatientAge
    ds.save_as(unknown)
    env = {**os.environ, "MEDSCREEN_HOME": _home(tmp_path, registered_store)}

    def score(*extra: str) -> dict[str, dict[str, object]]:
        result = subprocess.run([sys.executable, "-m", "medscreen", "--create-home", "score", "-q", *extra, str(folder)],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr
        return {line["study_instance_uid"]: line for line in map(json.loads, result.stdout.splitlines())}

    uid = {str(dcmread(p).StudyInstanceUID): p.name for p in (unknown, adult)}
    plain = {uid[k]: v for k, v in score().items()}
    assert "patient age unknown" in str(plain["no-age.dcm"]["error"]) and plain["no-age.dcm"]["assumed"] is None
    assumed = {uid[k]: v for k, v in score("--assume-age", "3").items()}
    assert assumed["no-age.dcm"]["error"] is None and assumed["no-age.dcm"]["score"] is not None
    assert assumed["no-age.dcm"]["assumed"] == {"patient_age_years": 3, "images": 1}
    assert "patient 64 y" in str(assumed["adult.dcm"]["error"]) and assumed["adult.dcm"]["assumed"] is None


def _odd_header_films(folder: Path) -> dict[str, Path]:
    """A good DX film beside two whose headers pass the ingest check but hold a value the preprocessing cannot use."""
    from pydicom import dcmread

    kermany = sorted((FIXTURES / "datasets" / "kermany" / "train" / "NORMAL").glob("*.jpeg"))
    films = {name: wrap_radiograph(kermany[i], folder / f"{name}.dcm", patient_id=f"O{i}")
             for i, name in enumerate(("good", "one-spacing", "empty-slope"))}
    ds = dcmread(films["one-spacing"])
    ds.ImagerPixelSpacing = "0.5"
    ds.save_as(films["one-spacing"])
    ds = dcmread(films["empty-slope"])
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = "1", "0", "US"
    ds.add_new(0x00281053, "DS", None)
    ds.save_as(films["empty-slope"])
    return films


def test_an_odd_header_is_could_not_score_with_the_reason_and_the_run_goes_on(tmp_path: Path, registered_store: Path) -> None:
    """A one-valued ImagerPixelSpacing or an empty RescaleSlope escaped the preprocessing as a TypeError: `medscreen
    score` stopped with a traceback at that study (no line for it or any later one), and the service retried the job
    until it was dead-lettered. Now the study is could-not-score with the reason, offline and in the service."""
    from pydicom import dcmread

    from inference.assemble import decode
    from inference.errors import CouldNotScore

    films = _odd_header_films(tmp_path / "site-data")
    for name, reason in (("one-spacing", "ImagerPixelSpacing"), ("empty-slope", "RescaleSlope")):
        with pytest.raises(CouldNotScore, match=reason):
            decode(dcmread(films[name]))  # the service's workers decode through the same function
    env = {**os.environ, "MEDSCREEN_HOME": _home(tmp_path, registered_store)}
    result = subprocess.run([sys.executable, "-m", "medscreen", "--create-home", "score", "-q", str(tmp_path / "site-data")],
                            capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    uid = {str(dcmread(path).StudyInstanceUID): name for name, path in films.items()}
    lines = {uid[line["study_instance_uid"]]: line for line in map(json.loads, result.stdout.splitlines())}
    assert set(lines) == set(films)
    assert lines["good"]["error"] is None and lines["good"]["score"] is not None
    assert lines["one-spacing"]["error"].startswith("could not score") and "ImagerPixelSpacing" in lines["one-spacing"]["error"]
    assert lines["empty-slope"]["error"].startswith("could not score") and "RescaleSlope" in lines["empty-slope"]["error"]
    assert "Traceback" not in result.stderr


def test_an_instance_given_twice_is_scored_once_as_the_service_would(tmp_path: Path, registered_store: Path) -> None:
    """`medscreen score` read every file it was given: a CT study exported twice, or named with its own series
    folder, had each slice twice and was 'could not score: duplicate slice positions' (32 instances), where the
    service, which stores a SOP Instance UID once, scores it. A copy with other bytes is refused, as ingest does."""
    import shutil

    from pydicom import dcmread

    ct = sorted((FIXTURES / "datasets" / "lidc" / "small").rglob("*.dcm"))
    first, second = tmp_path / "export-1" / "series", tmp_path / "export-2"
    first.mkdir(parents=True)
    for path in ct:
        shutil.copy(path, first / path.name)
    shutil.copytree(first, second)
    changed = dcmread(second / ct[0].name)
    changed.InstitutionName = "another export"
    changed.save_as(second / ct[0].name)
    env = {**os.environ, "MEDSCREEN_HOME": _home(tmp_path, registered_store), "MEDSCREEN_CT_MIN_SLICES": "3"}

    def score(*paths: Path) -> tuple[dict[str, object], str]:
        result = subprocess.run([sys.executable, "-m", "medscreen", "--create-home", "score", "-q", *map(str, paths)],
                                capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
        assert result.returncode == 0, result.stderr
        (line,) = map(json.loads, result.stdout.splitlines())
        return line, result.stderr

    alone, _ = score(first)
    assert alone["error"] is None and alone["instances"] == len(ct)
    twice, stderr = score(tmp_path / "export-1", first, second)
    assert (twice["error"], twice["score"], twice["instances"]) == (None, alone["score"], len(ct))
    assert "files refused: 1 differing-duplicate" in stderr
    assert f"{len(ct) - 1} files repeat an instance already read" in stderr
