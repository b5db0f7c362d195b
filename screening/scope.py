"""Whose screening results a clinician may see: one rule for the page, the API and the FHIR reads, so that no
view of a child is wider than another."""

from __future__ import annotations

from sqlalchemy import ColumnElement, and_, or_, select, true

from screening.tables import ScreeningAssignment, ScreeningRun
from service.auth import AuthenticatedUser, Role

__all__ = ["in_scope"]


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
