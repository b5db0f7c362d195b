"""Errors of the service layer (users, roles, secrets); the HTTP edge turns them into 4xx responses.

ServiceError
├── UserError
│   ├── UserExists
│   ├── UnknownUser
│   ├── UnknownRole
│   ├── InvalidUsername
│   └── WeakPassword
├── SecretKeyError
├── DeliveryFailed           a RIS/EMR did not take an outbox message (transient, or permanent: set aside)
│   └── PeerUnreachable      connection refused or timed out: retried without limit
├── SteeringRefused          a model version asked for a steering right it has not earned
└── DatabaseFromNewerRelease the database was migrated by a newer medscreen than this one
"""

from __future__ import annotations

__all__ = [
    "ServiceError",
    "UserError",
    "UserExists",
    "UnknownUser",
    "UnknownRole",
    "InvalidUsername",
    "WeakPassword",
    "SecretKeyError",
    "DeliveryFailed",
    "PeerUnreachable",
    "SteeringRefused",
    "DatabaseFromNewerRelease",
]


class ServiceError(Exception):
    """Base of the service layer's errors."""


class UserError(ServiceError):
    """A user account cannot be created or changed as asked."""


class UserExists(UserError):
    pass


class UnknownUser(UserError):
    pass


class UnknownRole(UserError):
    pass


class InvalidUsername(UserError):
    pass


class WeakPassword(UserError):
    pass


class SecretKeyError(ServiceError):
    """The token signing key file is unusable (unreadable, too short, readable by others)."""


class DeliveryFailed(ServiceError):
    """A peer (RIS, EMR) did not take a message from the outbox.

    ``permanent``: the peer refused this message itself (HL7 NAK ``AR``, HTTP 4xx); sending it again cannot
    help, so it is set aside with the reason. Otherwise the peer is down or answered a transient error, and
    the message is offered again after the retry delay, ahead of every later one.
    """

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


class PeerUnreachable(DeliveryFailed):
    """The peer could not be reached or did not answer in time: retried for as long as it takes."""


class SteeringRefused(ServiceError):
    """A steering right (``defer``) was asked for a model version without the evidence that earns it."""


class DatabaseFromNewerRelease(ServiceError):
    """The database holds migrations this release does not know: a newer medscreen migrated it. Migrating would
    fail inside alembic with a traceback; running on it would read tables this code does not describe."""
