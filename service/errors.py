"""Errors of the service layer (users, roles, secrets); the HTTP edge turns them into 4xx responses.

ServiceError
├── UserError
│   ├── UserExists
│   ├── UnknownUser
│   ├── UnknownRole
│   ├── InvalidUsername
│   └── WeakPassword
└── SecretKeyError
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
