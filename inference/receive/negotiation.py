"""Presentation contexts for storage SOP classes pynetdicom does not know: private ones and newer public ones.

Real studies carry objects of private SOP classes (Siemens CSA Non-Image, Philips and GE private storage) and of
public classes newer than pynetdicom's list (Label Map Segmentation). A context the receiver rejects makes the sender
fail that instance before it is sent: dcmtk's storescu then aborts the association and Orthanc's store job stops,
so the rest of the study is never sent. Such a context is therefore accepted, with the transfer syntaxes of every
storage context, and its C-STORE is answered by the storage service (the instance is acknowledged and left aside as
not scored, ``inference/intake.py``). Per association: the contexts are added to that association's acceptor and
mapped to the Storage Service Class through SOP Class Common Extended Negotiation (PS3.7 D.3.3.6), which pynetdicom
reads to choose the service, so nothing is registered process-wide for a UID a peer made up.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom import build_context
from pynetdicom.association import Association
from pynetdicom.events import Event
from pynetdicom.pdu_primitives import A_ASSOCIATE, SOPClassCommonExtendedNegotiation
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from inference.instance_headers import is_valid_uid

__all__ = ["STORAGE_SERVICE_CLASS", "add_unknown_storage_contexts", "storage_service_for_unknown_classes"]

STORAGE_SERVICE_CLASS = "1.2.840.10008.4.2"
_DICOM_ROOT = "1.2.840.10008."
# Every public storage SOP class of PS3.4 Annex B is under this arc (query, print and the rest are elsewhere).
_STORAGE_ARC = "1.2.840.10008.5.1.4.1.1."


def _storage_class(uid: str) -> bool:
    """A storage SOP class by its UID: a public one (under the storage arc) or a private one that pynetdicom does
    not know for another service."""
    if not is_valid_uid(uid) or not (uid.startswith(_STORAGE_ARC) or not uid.startswith(_DICOM_ROOT)):
        return False
    return uid_to_service_class(uid) in (ServiceClass, StorageServiceClass)


def _unknown_class(uid: str) -> bool:
    return uid_to_service_class(uid) is ServiceClass


def add_unknown_storage_contexts(assoc: Association, transfer_syntaxes: list[str]) -> list[str]:
    """Support, for this association only, each proposed abstract syntax that is an unknown storage class.

    Called on EVT_REQUESTED (the A-ASSOCIATE-RQ is read, negotiation has not started). Returns the classes added.
    """
    request = assoc.requestor.primitive
    if not isinstance(request, A_ASSOCIATE):
        return []
    supported = list(assoc.acceptor.supported_contexts)
    known = {str(context.abstract_syntax) for context in supported}
    added: list[str] = []
    for proposed in request.presentation_context_definition_list:
        uid = str(proposed.abstract_syntax or "")
        if uid in known or not _storage_class(uid):
            continue
        supported.append(build_context(uid, transfer_syntaxes))
        known.add(uid)
        added.append(uid)
    if added:
        assoc.acceptor.supported_contexts = supported
    return added


def storage_service_for_unknown_classes(event: Event) -> dict[UID, SOPClassCommonExtendedNegotiation]:
    """EVT_SOP_COMMON: the unknown storage classes this association supports belong to the Storage Service Class.

    pynetdicom picks the service of a request by its SOP class, through these items first; without them a C-STORE
    of a class it does not know aborts the association. Items the requestor sent are not honoured (as without a
    handler): only the classes added by :func:`add_unknown_storage_contexts` are mapped.
    """
    items: dict[UID, SOPClassCommonExtendedNegotiation] = {}
    for context in event.assoc.acceptor.supported_contexts:
        uid = str(context.abstract_syntax)
        if not _unknown_class(uid) or not _storage_class(uid):
            continue
        item = SOPClassCommonExtendedNegotiation()
        item.sop_class_uid = UID(uid)
        item.service_class_uid = UID(STORAGE_SERVICE_CLASS)
        items[UID(uid)] = item
    return items
