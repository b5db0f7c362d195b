"""What a peer (the EMR, the RIS) answered, as medscreen keeps and logs it: identifiers as digests.

An EMR that refuses a Bundle quotes what it could not resolve ("Resource Patient/MRN-4711 not found, specified in
path: RiskAssessment.subject", HAPI's referential-integrity check; "Patient?identifier=urn:mrn|MRN-4711"), and a
RIS's ACK text may quote a UID. That answer becomes the outbox message's ``last_error`` (answered by ``/api/outbox``
to ml-engineer, which reads no patient identity) and the warning or error line of the failed send, where the log
stream promises a digest of subject ids, never an id in clear. Each FHIR reference keeps its resource type and has
its id replaced by the digest the audit log lines show (``Patient/<digest>``, as the access log writes a path);
medscreen's own ids (``RiskAssessment/medscreen-ra-12``), which name no one, stay readable; every query value and
every DICOM UID becomes its digest. A name written out in free text is not recognised: HAPI and the RIS answers
seen quote references and ids, not names.
"""

from __future__ import annotations

import re

from service.audit import subject_digest

__all__ = ["scrub_peer_answer"]

# A FHIR id is [A-Za-z0-9-.]{1,64}; the resource type starts with a capital.
_REFERENCE = re.compile(r"\b([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_OWN_ID = re.compile(r"medscreen-[A-Za-z0-9.-]{1,64}")
# Not a patient's: the protocol ("HTTP/1.1") and the conformance resources a validation error names by URL
# ("http://hl7.org/fhir/StructureDefinition/RiskAssessment"), which the engineer needs to read.
_PLAIN_KINDS = frozenset({
    "HTTP", "StructureDefinition", "ValueSet", "CodeSystem", "ConceptMap", "NamingSystem", "SearchParameter",
    "OperationDefinition", "CapabilityStatement", "ImplementationGuide",
})
# A search's values ("?identifier=urn:mrn|MRN-4711&birthdate=2019-01-02"), up to a blank, quote or separator.
_QUERY_VALUE = re.compile(r"([?&][A-Za-z_:.\-]{1,64}=)([^&\s\"'<>,;)]+)")
_UID = re.compile(r"\b[0-2](?:\.(?:0|[1-9][0-9]*)){3,}\b")


def _reference(match: re.Match[str]) -> str:
    kind, fhir_id = match.group(1), match.group(2)
    if kind in _PLAIN_KINDS or _OWN_ID.fullmatch(fhir_id):
        return match.group(0)
    return f"{kind}/{subject_digest(fhir_id)}"


def scrub_peer_answer(text: str) -> str:
    """``text`` with FHIR references' ids (but medscreen's own), query values and UIDs as their digests."""
    text = _UID.sub(lambda m: "uid:" + subject_digest(m.group(0)), text)
    text = _QUERY_VALUE.sub(lambda m: m.group(1) + subject_digest(m.group(2)), text)
    return _REFERENCE.sub(_reference, text)
