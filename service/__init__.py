"""The platform every package may use: settings, database and migrations, users, auth, audit, page helpers.

It imports no domain package; the composition root (``medscreen``) composes them.
"""
