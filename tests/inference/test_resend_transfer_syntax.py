"""The same SOP Instance sent again in another transfer syntax, as a PACS re-sends what it compressed on archiving."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom.transport import ThreadedAssociationServer
from sqlalchemy import select

from benchmarks.dcmtk import dcmtk
from inference.ingest import InstanceIngestor
from inference.tables import Instance, QuarantinedItem, StudyEvent
from service.db import make_session_factory
from service.settings import Settings
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk, storescu

pytestmark = [pytest.mark.integration, requires_dcmtk]

CT = INFERENCE_FIXTURES / "ct" / "lidc-0002-0.dcm"
DX = INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm"


def _encode(tool: str, option: str, source: Path, target: Path, *extra: str) -> Path:
    subprocess.run([dcmtk(tool), option, *extra, str(source), str(target)], check=True, capture_output=True, timeout=60)
    return target


def _records(ingestor: InstanceIngestor) -> tuple[list[str], list[str], list[str]]:
    with make_session_factory(ingestor.engine)() as session:
        return (
            list(session.scalars(select(Instance.transfer_syntax_uid))),
            list(session.scalars(select(QuarantinedItem.kind))),
            list(session.scalars(select(StudyEvent.kind).where(StudyEvent.kind == "differing-duplicate"))),
        )


def test_the_same_instance_in_another_transfer_syntax_is_acknowledged_not_quarantined(
    dimse_server: ThreadedAssociationServer, ingestor: InstanceIngestor, sqlite_settings: Settings, tmp_path: Path
) -> None:
    # Each had been compared byte for byte with the stored copy: refused 0x0111 (the PACS's batch fails) and a whole
    # study's worth of the same images quarantined, with a differing-duplicate line on the study's timeline.
    first = storescu(sqlite_settings.dicom_port, CT, extra=("-R", "-xe"))
    assert "Received Store Response (Success)" in first, first
    resends = [
        (_encode("dcmcjpls", "+el", CT, tmp_path / "jpeg-ls.dcm"), "-xt"),
        (_encode("dcmcjpeg", "+e1", CT, tmp_path / "jpeg-lossless.dcm"), "-xs"),
        (_encode("dcmcrle", "+e", CT, tmp_path / "rle.dcm"), "-xr"),
        (_encode("dcmconv", "+td", CT, tmp_path / "deflated.dcm"), "-xd"),
        (CT, "-xi"),  # implicit VR: storescu converts on the wire
        (CT, "-xb"),  # big endian likewise
    ]
    for path, propose in resends:
        output = storescu(sqlite_settings.dicom_port, path, extra=("-R", propose))
        assert "Received Store Response (Success)" in output, (propose, output)

    stored, quarantined, events = _records(ingestor)
    assert stored == ["1.2.840.10008.1.2.1"]  # the first copy, as received
    assert quarantined == [] and events == []


def test_a_lossy_copy_of_a_stored_instance_still_differs(
    dimse_server: ThreadedAssociationServer, ingestor: InstanceIngestor, sqlite_settings: Settings, tmp_path: Path
) -> None:
    assert "Received Store Response (Success)" in storescu(sqlite_settings.dicom_port, DX, extra=("-R", "-xe"))
    # +un: keep the SOP Instance UID (dcmcjpeg gives a lossy copy a new one by default, as PS3.3 asks).
    lossy = _encode("dcmcjpeg", "+eb", DX, tmp_path / "baseline.dcm", "+un")
    output = storescu(sqlite_settings.dicom_port, lossy, extra=("-R", "-xy"))
    assert "Unknown Status: 0x111" in output, output
    _, quarantined, events = _records(ingestor)
    assert quarantined == ["differing-duplicate"] and events == ["differing-duplicate"]
