"""The composition root of medscreen: the app factory, ``serve`` and the CLI, composed from every package.

Nothing imports this package; it imports the platform (``service``) and the domain packages.
"""
