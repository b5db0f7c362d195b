"""The ``serve`` command."""

from __future__ import annotations

import argparse

from service.settings import Settings

__all__ = ["add_commands"]


def _serve(args: argparse.Namespace, settings: Settings) -> int:
    from medscreen.serve import run_service

    return run_service(settings)


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = subparsers.add_parser(
        "serve",
        help="start medscreen: HTTP API and pages, DICOM receivers, scoring workers, completeness and worklist loops",
        description="Start medscreen: HTTP API (MEDSCREEN_HTTP_HOST:MEDSCREEN_HTTP_PORT, default 127.0.0.1:8000) and "
        "DICOM receiver (AE MEDSCREEN_DICOM_AE_TITLE on MEDSCREEN_DICOM_PORT, default MEDSCREEN:11112); "
        "data under MEDSCREEN_HOME (default ./var).",
    )
    parser.set_defaults(func=_serve)
