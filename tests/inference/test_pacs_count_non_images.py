"""The PACS's count of a study takes in its SR, presentation states and other objects medscreen leaves aside.

Orthanc's NumberOfStudyRelatedInstances (asked by C-FIND, as a site configures MEDSCREEN_PACS_AE_TITLE) counts every
object of the study. medscreen compared it with the images it stored alone: a study sent with one SR or presentation
state never completed by the count, waited for the quiet period, and then carried a false possibly_incomplete.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid

from inference.complete import CompletenessMonitor
from inference.ingest import InstanceIngestor
from inference.pacs_count import CFindInstanceCounter
from inference.route import load_rules
from service.db import make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES
from tests.peers import Orthanc, start_orthanc, stop_orthanc

pytestmark = [pytest.mark.integration]

CT = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm"))
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
GRAYSCALE_PRESENTATION_STATE = "1.2.840.10008.5.1.4.1.1.11.1"


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[Orthanc]:
    pacs = start_orthanc(tmp_path / "orthanc", modalities={"medscreen": ["MEDSCREEN", "127.0.0.1", 104]})
    yield pacs
    stop_orthanc(pacs)


def _non_image(source: Path, sop_class: str, modality: str, target: Path) -> Path:
    """An object of the CT's study that carries no image (its header is enough for the count and for intake)."""
    ds = dcmread(source)
    del ds.PixelData
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.save_as(target, enforce_file_format=True)
    return target


def test_a_study_with_an_sr_and_a_presentation_state_completes_by_the_pacs_count(
    orthanc: Orthanc, ingestor: InstanceIngestor, sqlite_settings: Settings, incoming_copy, tmp_path: Path
) -> None:
    others = [
        _non_image(CT[0], BASIC_TEXT_SR, "SR", tmp_path / "sr.dcm"),
        _non_image(CT[0], GRAYSCALE_PRESENTATION_STATE, "PR", tmp_path / "pr.dcm"),
    ]
    orthanc.upload([*CT, *others])
    for path in [*CT, *others]:
        stored = ingestor.accept_file(incoming_copy(path), source="dimse", calling_ae="ORTHANC")
        assert stored.not_scored in (None, "ignored")

    # A quiet period of an hour: only the count can complete the study now.
    settings = sqlite_settings.model_copy(update={"quiet_period_s": 3600.0})
    counter = CFindInstanceCounter("127.0.0.1", orthanc.dicom_port, "ORTHANC", "MEDSCREEN")
    assert counter.count(str(dcmread(CT[0]).StudyInstanceUID)) == len(CT) + len(others)
    monitor = CompletenessMonitor(settings, make_session_factory(ingestor.engine), load_rules(None), counter)
    completed = monitor.complete_quiet_studies()
    assert [(c.reason, c.instance_count) for c in completed] == [("pacs-count", len(CT))]
