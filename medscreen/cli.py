"""The ``medscreen`` command line: ``serve`` plus the commands each package contributes.

Each module in :data:`COMMAND_MODULES` exposes ``add_commands(subparsers)``; a command's handler is
``func(args, settings) -> int``. A command that sets ``needs_database=True`` finds the schema of every
package up to date (the root migrates it first, so no package has to know the others' branches). Heavy imports (torch, MLflow) happen inside the handlers so that
``medscreen --help`` stays fast and serving never pulls in training code.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from service.settings import Settings

__all__ = ["main", "run_command", "COMMAND_MODULES"]

COMMAND_MODULES = (
    "medscreen.serve_command",
    "medscreen.worker_command",
    "service.users_command",
    "inference.cli",
    "training.cli",
    "training.retrain_cli",
    "quality.cli",
    "screening.cli",
)


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
    )
    logging.Formatter.converter = __import__("time").gmtime  # UTC timestamps in every log line


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="medscreen",
        description="medscreen: AI decision support for radiology triage and rare-disease screening. "
        "Settings come from MEDSCREEN_* environment variables (see README).",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).add_commands(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    settings = Settings()
    configure_logging(settings.log_level)
    return run_command(args, settings)


def run_command(args: argparse.Namespace, settings: Settings) -> int:
    """Prepare what the parsed command needs (the schema of every package) and run its handler."""
    if getattr(args, "needs_database", False):
        from medscreen.schema import migrate_all

        settings.home.mkdir(parents=True, exist_ok=True)
        migrate_all(settings.resolved_database_url)
    return int(args.func(args, settings) or 0)


if __name__ == "__main__":
    sys.exit(main())
