"""Whose screening results a clinician may see, and which stored results are of the same child: one rule for
the store, the page, the API and the FHIR reads, so that no view of a child is wider than another and no
clinician's patient stands in for another's.

A child is its record id within its scope: the organisation the record names (within one clinic the record id is
the clinic's, so a change of practitioner there is the same child), else the practitioner it names, or, when it
names neither, the clinician who submitted it (``ScreeningRun.owner``; a batch run's such results are no
clinician's until a run names the extract's organisation). A clinician's record naming a practitioner or an
organisation, none of them one they are assigned to, is their own child too: a post writes only into a scope its
submitter can read."""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import ColumnElement, and_, or_, select, true
from sqlalchemy.orm import Session

from screening.tables import ScreeningAssignment, ScreeningRun
from service.auth import AuthenticatedUser, Role

__all__ = ["in_scope", "Child", "holds_care_team", "child_of_record", "same_child"]


def in_scope(user: AuthenticatedUser) -> ColumnElement[bool]:
    """Results a clinician may see: children they submitted, or whose record names a practitioner or an
    organisation they are assigned to; an admin sees all."""
    if Role.admin in user.roles:
        return true()
    mine = select(ScreeningAssignment).where(ScreeningAssignment.username == user.username)
    practitioners = mine.where(ScreeningAssignment.practitioner != "").with_only_columns(ScreeningAssignment.practitioner)
    organizations = mine.where(ScreeningAssignment.organization != "").with_only_columns(ScreeningAssignment.organization)
    return or_(
        ScreeningRun.submitted_by == user.username,
        and_(ScreeningRun.practitioner != "", ScreeningRun.practitioner.in_(practitioners)),
        and_(ScreeningRun.organization != "", ScreeningRun.organization.in_(organizations)),
    )


class Child(NamedTuple):
    """A stored result's child: its record id within its scope."""

    patient_id: str
    practitioner: str
    organization: str
    owner: str

    @classmethod
    def of(cls, row: ScreeningRun) -> Child:
        return cls(row.patient_id, row.practitioner, row.organization, row.owner)

    def identity(self) -> tuple[str, str, str, str]:
        """What tells two results' children apart (``same_child``): the practitioner only where no organisation
        is named. A child whose record moved to another practitioner of the same organisation is one child."""
        return self.patient_id, "" if self.organization else self.practitioner, self.organization, self.owner


def holds_care_team(session: Session, username: str, practitioner: str, organization: str) -> bool:
    """Whether a clinician is assigned to the practitioner or the organisation a record names: then its results
    are in their scope (``in_scope``), and so are all the results of the same child."""
    named = []
    if practitioner:
        named.append(ScreeningAssignment.practitioner == practitioner)
    if organization:
        named.append(ScreeningAssignment.organization == organization)
    if not named:
        return False
    assigned = select(ScreeningAssignment.id).where(ScreeningAssignment.username == username, or_(*named)).limit(1)
    return session.scalar(assigned) is not None


def child_of_record(
    session: Session, patient_id: str, practitioner: str, organization: str, submitter: str, *, admin: bool = False
) -> Child:
    """The child a clinician's record is (``submitter`` "": a batch run's, the care team it names).

    A record naming a care team the clinician is not assigned to (and they are no admin) is the submitter's own
    child, as one naming none (one naming an organisation and a practitioner, of whom they are assigned to the
    practitioner only, keeps its care team, so that both see it, but is their own child too): it must not withdraw ("the child has died"), replace (another name, other findings)
    or stand for a flag of a scope they cannot read. A record naming no care team, whose id a stored result
    already holds under exactly one organisation this clinician is assigned to, is that organisation's child: the
    clinic's extract was screened with ``screen-emr --organization`` and its paediatrician now posts the same
    record. Otherwise such a record is the submitter's own child (two such organisations: which one is not known)."""
    if not submitter:
        return Child(patient_id, practitioner, organization, "")
    if practitioner or organization:
        if admin or holds_care_team(session, submitter, "" if organization else practitioner, organization):
            return Child(patient_id, practitioner, organization, "")
        if organization and holds_care_team(session, submitter, practitioner, ""):
            # Assigned to the practitioner, not the organisation: the organisation's child (``same_child``, whichever
            # of its practitioners the record named) is of a scope they cannot read; theirs, under the care team named.
            return Child(patient_id, practitioner, organization, submitter)
        return Child(patient_id, "", "", submitter)
    assigned = select(ScreeningAssignment.organization).where(
        ScreeningAssignment.username == submitter, ScreeningAssignment.organization != ""
    )
    holding = session.scalars(
        select(ScreeningRun.organization)
        .where(ScreeningRun.patient_id == patient_id, ScreeningRun.practitioner == "", ScreeningRun.organization.in_(assigned))
        .distinct()
        .limit(2)
    ).all()
    if len(holding) == 1:
        return Child(patient_id, "", holding[0], "")
    return Child(patient_id, "", "", submitter)


def same_child(other: type[ScreeningRun]) -> ColumnElement[bool]:
    """``other`` (an alias) is a result of the same child as the ``ScreeningRun`` row of the query
    (``Child.identity``). Within one organisation the practitioner does not count: a family that changed GP in
    the clinic had left the first GP's flag waiting beside the new one, the clinic's paediatrician asked twice
    about one child and the EMR holding two active Flags."""
    return and_(
        other.patient_id == ScreeningRun.patient_id,
        other.organization == ScreeningRun.organization,
        or_(ScreeningRun.organization != "", other.practitioner == ScreeningRun.practitioner),
        other.owner == ScreeningRun.owner,
    )
