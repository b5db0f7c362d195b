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
