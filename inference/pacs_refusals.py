"""Why a PACS refused an association or presentation context (write-back, the completeness count), in words an
operator can act on.

The reason is kept on the outgoing row (``last_error``) and the study's ``write-back-retry``/``-dead`` line. It had
read "association ... failed" whether the PACS was down, or rejected medscreen's calling AE title (the usual first
set-up error, fixed in the PACS's list of known AEs), and "it does not store that SOP class" for a context the PACS
refused for its transfer syntaxes.
"""

from __future__ import annotations

from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.pdu_primitives import A_ASSOCIATE

__all__ = ["association_failure", "context_refusal"]

_ABSTRACT_SYNTAX_NOT_SUPPORTED = 0x03
_TRANSFER_SYNTAXES_NOT_SUPPORTED = 0x04
# A-ASSOCIATE-RJ (PS3.8 9.3.4): result source service user, with the diagnostics an operator can fix.
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNISED = 0x03
_CALLING_AE_NOT_RECOGNISED_HINT = "add AE {calling} (this host) to the PACS's known AEs"
_CALLED_AE_NOT_RECOGNISED = 0x07
_CALLED_AE_NOT_RECOGNISED_HINT = "check MEDSCREEN_PACS_AE_TITLE against the PACS's own AE title"


def association_failure(
    assoc: Association, *, called_ae: str, calling_ae: str, where: str, sop_classes: list[UID]
) -> str:
    """Why ``assoc`` (not established) failed: rejected with the PACS's reason, no context accepted, or no answer."""
    answer = assoc.acceptor.primitive
    if assoc.is_rejected and isinstance(answer, A_ASSOCIATE):
        reason = f"{called_ae} at {where} rejected the association from {calling_ae} ({answer.result_str.lower()}: {answer.reason_str})"
        if answer.result_source == _SERVICE_USER and answer.diagnostic == _CALLING_AE_NOT_RECOGNISED:
            reason += "; " + _CALLING_AE_NOT_RECOGNISED_HINT.format(calling=calling_ae)
        elif answer.result_source == _SERVICE_USER and answer.diagnostic == _CALLED_AE_NOT_RECOGNISED:
            reason += "; " + _CALLED_AE_NOT_RECOGNISED_HINT
        return reason
    if isinstance(answer, A_ASSOCIATE) and answer.result == 0x00:
        # Accepted with no presentation context: pynetdicom aborts such an association at once.
        return "; ".join(context_refusal(assoc, sop_class, called_ae=called_ae) for sop_class in sop_classes)
    return f"no association with {called_ae} at {where}: the connection failed or the PACS did not answer"


def context_refusal(assoc: Association, sop_class: UID, *, called_ae: str) -> str:
    """Why the PACS accepted no context for ``sop_class``, from the result it gave the proposed context."""
    results = {context.result for context in assoc.rejected_contexts if context.abstract_syntax == sop_class}
    named = f"{sop_class.name} ({sop_class})"
    if results == {_TRANSFER_SYNTAXES_NOT_SUPPORTED}:
        offered = sorted(
            {
                UID(ts).name
                for context in assoc.requestor.requested_contexts
                if context.abstract_syntax == sop_class
                for ts in context.transfer_syntax
            }
        )
        return (
            f"{called_ae} takes {named} in none of the transfer syntaxes offered ({', '.join(offered)}); "
            "a PACS must take Implicit VR Little Endian (PS3.5 10.1)"
        )
    if results == {_ABSTRACT_SYNTAX_NOT_SUPPORTED} or not results:
        return f"{called_ae} accepts no presentation context for {named}; it does not support that SOP class"
    return f"{called_ae} refused the presentation context for {named} (no reason given)"
