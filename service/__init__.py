"""Composition of medscreen: settings, database, auth, audit, the FastAPI app and the CLI."""
