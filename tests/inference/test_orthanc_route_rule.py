"""The README's Orthanc configuration, for real: Orthanc running the shipped Lua rule forwards radiographs to
medscreen's receiver and keeps medscreen's own heat-map (Manufacturer medscreen) to itself, so nothing loops."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import text

from benchmarks.study_factory import wrap_radiograph
from inference.ingest import InstanceIngestor
from service.settings import Settings
from tests.conftest import FIXTURES, REPO
from tests.peers import Orthanc, start_orthanc, stop_orthanc, wait_for

pytestmark = [pytest.mark.integration]
RULE = REPO / "inference" / "orthanc" / "medscreen-route.lua"
KERMANY = FIXTURES / "datasets" / "kermany" / "train"


@pytest.fixture
def orthanc(tmp_path: Path, sqlite_settings: Settings, dimse_server: ThreadedAssociationServer) -> Iterator[Orthanc]:
    modalities = {"medscreen": ["MEDSCREEN", "127.0.0.1", sqlite_settings.dicom_port]}
    pacs = start_orthanc(tmp_path / "orthanc", modalities=modalities, extra_config={"LuaScripts": [str(RULE)]})
    yield pacs
    stop_orthanc(pacs)


def test_the_shipped_rule_forwards_images_and_never_medscreens_own_results(
    tmp_path: Path, orthanc: Orthanc, ingestor: InstanceIngestor
) -> None:
    assert RULE.read_text() in (REPO / "README.md").read_text(), "the README shows the shipped rule"
    dx = wrap_radiograph(KERMANY / "NORMAL" / "IM-0115-0001.jpeg", tmp_path / "dx.dcm")
    own = dcmread(dx)
    own.Manufacturer = "medscreen"
    own.SeriesInstanceUID, own.SOPInstanceUID = generate_uid(), generate_uid()
    own.file_meta.MediaStorageSOPInstanceUID = own.SOPInstanceUID
    own.save_as(tmp_path / "own.dcm", enforce_file_format=True)
    orthanc.upload([tmp_path / "own.dcm", dx])

    def received() -> list[str]:
        with ingestor.engine.connect() as connection:
            return list(connection.execute(text("SELECT sop_instance_uid FROM instances")).scalars())

    wait_for(received, 60, "Orthanc to forward the radiograph")
    second = wrap_radiograph(KERMANY / "NORMAL" / "IM-0117-0001.jpeg", tmp_path / "dx2.dcm")
    orthanc.upload([second])  # forwarded after the heat-map: had the heat-map been sent, it would be here by now
    wait_for(lambda: len(received()) >= 2, 60, "the second radiograph")
    assert sorted(received()) == sorted(
        str(dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in (dx, second)
    )
