"""The completeness signal: how many instances the PACS holds for a study (QIDO-RS or C-FIND).

When medscreen has received as many instances as the PACS says the study has, the study is complete
without waiting for the quiet period. The count is only a speed-up: an answer that is not a count (a login
page, a JSON error object, a refused FIND context) is "no count", logged, and the quiet period decides.
"""

from __future__ import annotations

import logging
import ssl
from typing import Any, Protocol

import httpx
from pydicom.dataset import Dataset
from pydicom.uid import UID
from pynetdicom import AE

from inference.pacs_refusals import association_failure
from inference.tls import pacs_tls_args
from service.settings import Settings

__all__ = ["InstanceCounter", "QidoInstanceCounter", "CFindInstanceCounter", "counter_from_settings"]

log = logging.getLogger(__name__)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND


class InstanceCounter(Protocol):
    def count(self, study_instance_uid: str) -> int | None:
        """Instances the PACS holds for the study, or None when it does not know or cannot be asked."""


class QidoInstanceCounter:
    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = httpx.Client(timeout=timeout_s)

    def count(self, study_instance_uid: str) -> int | None:
        try:
            response = self.client.get(
                f"{self.base_url}/studies",
                params={"StudyInstanceUID": study_instance_uid, "includefield": "00201208"},
                headers={"Accept": "application/dicom+json"},
            )
        except httpx.HTTPError as exc:
            log.warning("QIDO-RS count query failed: %s", exc)
            return None
        if response.status_code == 204 or not response.content:
            return None
        if response.status_code != 200:
            log.warning("QIDO-RS count query answered HTTP %d", response.status_code)
            return None
        try:
            return _qido_count(response.json())
        except (ValueError, TypeError, AttributeError, IndexError) as exc:
            content_type = response.headers.get("content-type", "")
            log.warning("QIDO-RS count query: the answer (%s) is not a study count: %s", content_type, exc)
            return None


def _count(value: Any) -> int:
    count = int(value)
    if count < 0:
        raise ValueError(f"negative instance count {count}")
    return count


def _qido_count(answer: Any) -> int | None:
    """NumberOfStudyRelatedInstances of a QIDO-RS study search's DICOM JSON; raises on any other shape."""
    if not isinstance(answer, list):
        raise TypeError(f"expected a JSON array of studies, got {type(answer).__name__}")
    for study in answer:
        values = study.get("00201208", {}).get("Value")
        if values:
            return _count(values[0])
    return None


class CFindInstanceCounter:
    def __init__(
        self, host: str, port: int, called_ae: str, calling_ae: str, tls_args: tuple[ssl.SSLContext, str] | None = None
    ) -> None:
        self.host, self.port, self.called_ae, self.tls_args = host, port, called_ae, tls_args
        self.calling_ae = calling_ae
        self.ae = AE(ae_title=calling_ae)
        self.ae.add_requested_context(STUDY_ROOT_FIND)
        self.ae.acse_timeout = self.ae.dimse_timeout = self.ae.network_timeout = 5

    def count(self, study_instance_uid: str) -> int | None:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = study_instance_uid
        query.NumberOfStudyRelatedInstances = ""
        assoc = self.ae.associate(self.host, self.port, ae_title=self.called_ae, tls_args=self.tls_args)
        if not assoc.is_established:
            # The PACS's own reason: one that does not know medscreen's AE title says so, and the fix is in the PACS.
            why = association_failure(
                assoc, called_ae=self.called_ae, calling_ae=self.calling_ae, where=f"{self.host}:{self.port}",
                sop_classes=[UID(STUDY_ROOT_FIND)],
            )
            log.warning("C-FIND count query gave no count: %s", why)
            return None
        found: int | None = None
        try:
            for status, identifier in assoc.send_c_find(query, STUDY_ROOT_FIND):
                if status and status.Status in (0xFF00, 0xFF01) and identifier is not None:
                    value = identifier.get("NumberOfStudyRelatedInstances")
                    if value not in (None, ""):
                        found = _count(value)
        except (ValueError, TypeError, AttributeError, RuntimeError) as exc:
            # pynetdicom raises ValueError when the PACS accepted no FIND context; int() on a non-numeric count.
            log.warning("C-FIND count query to %s:%d gave no count: %s", self.host, self.port, exc)
            found = None
        finally:
            assoc.release()
        return found


def counter_from_settings(settings: Settings) -> InstanceCounter | None:
    if settings.pacs_qido_url:
        return QidoInstanceCounter(settings.pacs_qido_url)
    if settings.pacs_ae_title and settings.pacs_host and settings.pacs_port:
        return CFindInstanceCounter(
            settings.pacs_host, settings.pacs_port, settings.pacs_ae_title, settings.dicom_ae_title,
            pacs_tls_args(settings),
        )
    return None
