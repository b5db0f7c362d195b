"""Logs carry digests only: no study UID in access-log paths, no raw header bytes from pydicom."""

from __future__ import annotations

import logging
import warnings

from medscreen.logging_config import configure_logging, uid_digests

STUDY = "1.3.6.1.4.1.14519.5.2.1.6279.6001.490157381160200744295382098329"


def test_uids_in_access_log_paths_become_digests(caplog) -> None:
    configure_logging("INFO")
    access = logging.getLogger("uvicorn.access")
    with caplog.at_level(logging.INFO, logger="uvicorn.access"):
        access.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", f"/api/studies/{STUDY}", "1.1", 200)
    assert STUDY not in caplog.text and "uid:" in caplog.text
    assert uid_digests("version 1.2 of 3") == "version 1.2 of 3", "short dotted numbers are not UIDs"


def test_pydicom_warnings_with_raw_bytes_stay_out_of_the_log(caplog) -> None:
    configure_logging("INFO")
    with caplog.at_level(logging.WARNING), warnings.catch_warnings(record=True) as caught:
        warnings.filterwarnings("ignore", module=r"pydicom(\\.|$)")
        logging.getLogger("pydicom").warning("Invalid value for VR PN: 'Doe^Jane'")
    assert "Doe^Jane" not in caplog.text
    assert logging.getLogger("pydicom").getEffectiveLevel() >= logging.ERROR
    assert not caught


def test_building_the_sr_and_heatmap_logs_no_source_uid(caplog) -> None:
    # highdicom logs the source image's UIDs at INFO ("copy Patient-related attributes from dataset 1.2...")
    # for every document it builds: a served log would name each study scored.
    import numpy as np
    from pydicom import dcmread

    from inference.scorers import TaskScore
    from inference.writeback import ResultToWrite, build_heatmap, build_sr
    from tests.inference.conftest import INFERENCE_FIXTURES

    configure_logging("INFO")
    source = dcmread(INFERENCE_FIXTURES / "images" / "dx_chest_highdicom.dcm")
    scored = TaskScore(0.72, {"kind": "heatmap", "point": [40.0, 60.0]}, source, np.linspace(0, 1, 64).reshape(8, 8), np.full((64, 64), 0.5))
    result = ResultToWrite("chest-xray", "chest-xray", "1", "run-1", 0.6, "positive", scored, None)
    with caplog.at_level(logging.INFO), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        build_sr(result, series_instance_uid="1.2.826.0.1.3680043.8.498.77.1")
        build_heatmap(result, series_instance_uid="1.2.826.0.1.3680043.8.498.77.2")
    for uid in (source.SOPInstanceUID, source.StudyInstanceUID, source.SeriesInstanceUID):
        assert str(uid) not in caplog.text
