"""A real PACS (Orthanc) sends real studies to a running medscreen by C-STORE and by STOW-RS.

Every study must be recorded, complete and routed; the completeness signal is Orthanc's own
instance count, asked by C-FIND or QIDO-RS, so completion comes before the quiet period ends.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.conftest import SHARED_DATA
from tests.inference.conftest import INFERENCE_FIXTURES, requires_dcmtk
from tests.peers import (
    DICOMWEB_PLUGIN,
    MedscreenService,
    Orthanc,
    start_orthanc,
    stop_orthanc,
    wait_for,
)

pytestmark = [pytest.mark.integration, requires_dcmtk]

EXPECTED_TASKS = {"CT": "ct-chest", "MG": "mammography"}
# A quiet period no test run reaches: every study must be completed by Orthanc's count. (It had been 30 s, with a
# 25 s wait for every study routed, which a loaded CI machine storing the shared CT series can overrun.)
QUIET_S = 3600
ROUTED_S = 240  # bounds a hang only


def study_files() -> list[Path]:
    """Real CT, MG and DX files: the fixtures, plus every LIDC slice and real MG/CR/DX headers where ../shared exists."""
    files = sorted((INFERENCE_FIXTURES / "ct").glob("*.dcm")) + [
        INFERENCE_FIXTURES / "images" / name
        for name in ("mg_ge_senographe.dcm", "dx_chest_highdicom.dcm", "dx_abdomen_ge.dcm")
    ]
    if SHARED_DATA.is_dir():
        files += sorted((SHARED_DATA / "ct" / "lidc" / "small").rglob("*.dcm"))
        openrem = SHARED_DATA / "dicom" / "openrem" / "openrem" / "remapp" / "tests" / "test_files"
        files += sorted(openrem.glob("MG-Im-GE_Seno_2*.dcm")) + sorted(openrem.glob("DX-Im-GE_XR220-*.dcm"))
    return files


def distinct_instances(files: list[Path]) -> int:
    """The fixtures are copies of some shared files: the PACS and medscreen keep one instance per SOP UID."""
    return len({dcmread(path, stop_before_pixels=True).SOPInstanceUID for path in files})


@pytest.fixture
def orthanc_factory(tmp_path: Path) -> Iterator[Callable[..., Orthanc]]:
    started: list[Orthanc] = []

    def make(**kwargs: object) -> Orthanc:
        orthanc = start_orthanc(tmp_path / f"orthanc-{len(started)}", **kwargs)  # type: ignore[arg-type]
        started.append(orthanc)
        return orthanc

    yield make
    for orthanc in started:
        stop_orthanc(orthanc)


def _all_settled(service: MedscreenService, headers: dict[str, str], expected: int) -> list[dict[str, object]] | None:
    items = service.studies(headers)["items"]
    # Routed studies go on to scoring; anything past `complete` has been routed.
    if len(items) == expected and all(item["status"] not in ("receiving", "complete") for item in items):
        return items
    return None


def _check_routes(service: MedscreenService, headers: dict[str, str], items: list[dict[str, object]]) -> None:
    for item in items:
        if item["modality"] in EXPECTED_TASKS:
            assert item["task"] == EXPECTED_TASKS[str(item["modality"])] and item["status"] != "not_applicable", item
    dx = [service.study(headers, str(i["study_instance_uid"])) for i in items if i["modality"] == "DX"]
    assert {d["task"] for d in dx} == {"chest-xray", None}  # the chest DX routes, the abdomen DX does not
    not_applicable = next(d for d in dx if d["task"] is None)
    assert "ABDOMEN" in not_applicable["status_reason"]


def test_orthanc_cstore_to_medscreen_with_cfind_completeness(
    orthanc_factory: Callable[..., Orthanc], medscreen_service: Callable[..., MedscreenService]
) -> None:
    # Each needs the other's port: start Orthanc, then medscreen (which asks Orthanc by C-FIND), then
    # register medscreen as a modality over Orthanc's REST API.
    orthanc = orthanc_factory()
    service = medscreen_service(
        quiet_period_s=QUIET_S, pacs_ae_title="ORTHANC", pacs_host="127.0.0.1", pacs_port=orthanc.dicom_port
    )
    orthanc.client.put(
        "/modalities/medscreen", json={"AET": "MEDSCREEN", "Host": "127.0.0.1", "Port": service.dicom_port}
    ).raise_for_status()

    files = study_files()
    study_ids = orthanc.upload(files)
    orthanc.store_to("medscreen", study_ids)

    headers = service.token_headers()
    # Orthanc's C-FIND count must complete every study long before the quiet period.
    items = wait_for(lambda: _all_settled(service, headers, len(study_ids)), ROUTED_S, "every study routed")
    assert sum(int(i["instance_count"]) for i in items) == distinct_instances(files)
    _check_routes(service, headers, items)
    ct = next(i for i in items if i["modality"] == "CT")
    timeline = service.study(headers, str(ct["study_instance_uid"]))["timeline"]
    complete = next(e for e in timeline if e["kind"] == "complete")
    assert complete["detail"]["reason"] == "pacs-count"
    # Seconds after the last instance (a poll every 0.2 s, then Orthanc's answer), not the quiet period's hour; the
    # bound allows for a loaded machine.
    assert complete["detail"]["delay_after_last_instance_s"] < 60


@pytest.mark.skipif(not DICOMWEB_PLUGIN.exists(), reason="Debian's orthanc-dicomweb is not installed (make test installs it)")
def test_orthanc_stow_rs_to_medscreen_with_qido_completeness(
    orthanc_factory: Callable[..., Orthanc], medscreen_service: Callable[..., MedscreenService]
) -> None:
    # Orthanc's QIDO-RS is the completeness signal, so Orthanc starts first (without the STOW target)...
    pacs = orthanc_factory(dicomweb_servers={})
    service = medscreen_service(quiet_period_s=QUIET_S, pacs_qido_url=pacs.dicomweb_url)
    headers = service.token_headers()
    # ...and the STOW-RS target is registered once medscreen is up, with a real login token.
    pacs.client.put(
        "/dicom-web/servers/medscreen",
        json={"Url": f"{service.url}/dicomweb/", "HttpHeaders": headers},
    ).raise_for_status()

    files = study_files()
    study_ids = pacs.upload(files)
    pacs.stow_to("medscreen", study_ids)

    items = wait_for(lambda: _all_settled(service, headers, len(study_ids)), ROUTED_S, "every study routed")
    assert sum(int(i["instance_count"]) for i in items) == distinct_instances(files)
    _check_routes(service, headers, items)
    reasons = {
        e["detail"]["reason"]
        for i in items
        for e in service.study(headers, str(i["study_instance_uid"]))["timeline"]
        if e["kind"] == "complete"
    }
    assert reasons == {"pacs-count"}
