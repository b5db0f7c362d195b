"""Logging for every medscreen entry point: the CLI, ``serve`` and the processes ``serve`` spawns.

One format (UTC timestamps, process name, logger name) to stderr. Chatty libraries are held at WARNING, and
Alembic's per-connection lines ("Context impl SQLiteImpl", "Will assume transactional DDL") are dropped on
every command, while the lines naming a migration it actually runs are kept. Nothing that names a patient or
a study reaches it: pydicom's raw-byte warnings are dropped, UIDs in access-log paths and the values of query
parameters that may name a patient or study become digests, and tracebacks lose SQL parameters and UIDs.
"""

from __future__ import annotations

import hashlib
import logging
import re
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from urllib.parse import unquote_plus

__all__ = ["configure_logging", "run_configured", "uid_digests"]

# ISO 8601 in UTC, marked as such: the bare "2026-12-02 12:51:08,986" of logging's default was UTC (the converter
# below) yet read as local time at a site whose journal and tickets are in its own zone.
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(processName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Libraries that log every association, request or registry call at INFO; highdicom logs seven lines per
# result document, naming the source image's SOP Instance UID in them.
QUIET_LIBRARIES = ("pynetdicom", "mlflow", "urllib3", "httpx", "highdicom")


# A DICOM UID in a URL (/api/studies/1.2.840...): it names a study, so the log keeps a digest only.
_UID_IN_TEXT = re.compile(r"\b[0-2](?:\.(?:0|[1-9][0-9]*)){3,}\b")
# Query parameters whose values name no patient or study (filters on state, modality, task, dates, paging, model
# versions, staff accounts): logged as sent. Every other value is logged as a digest, so that a patient-keyed
# parameter (subject, subject_id, patient, identifier, study, study_uid, _id, ...), a new one or one a client
# sends that no route reads, never reaches the log in clear.
PLAIN_QUERY_PARAMETERS = frozenset({
    "_count", "_format", "action", "actor", "as_of", "challenger", "champion", "channel", "claimed", "format",
    "fragment", "include_decided", "kind", "limit", "min_sensitivity", "modality", "node", "offset", "page",
    "per_page", "policy_since", "since", "site", "state", "status", "subject_type", "task", "until", "version",
})
_QUERY_STRING = re.compile(r"\?([^\s\"]*)")
# "Patient/case-7": the resource type stays readable, the id becomes the digest its audit line shows.
_FHIR_REFERENCE = re.compile(r"([A-Z][A-Za-z]+/)(.+)")
# SQLAlchemy's "[parameters: ...]" line and PostgreSQL's DETAIL line ("Key (patient_id)=(...) already exists")
# quote row values; engines hide parameters, this also covers an engine or driver that does not.
_SQL_PARAMETERS = re.compile(r"^\[parameters: .*$", re.MULTILINE)
_DRIVER_DETAIL = re.compile(r"^(\s*DETAIL:).*$", re.MULTILINE)


def _hash(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()[:12]


def _digest(match: re.Match[str]) -> str:
    return "uid:" + _hash(match.group(0))


def _query_value_digest(value: str) -> str:
    decoded = unquote_plus(value)
    reference = _FHIR_REFERENCE.fullmatch(decoded)
    if reference:
        return f"{reference.group(1)}{_hash(reference.group(2))}"
    return _hash(decoded)


def _digest_query(match: re.Match[str]) -> str:
    parameters = []
    for pair in match.group(1).split("&"):
        name, equals, value = pair.partition("=")
        if unquote_plus(name) in PLAIN_QUERY_PARAMETERS or not pair:
            parameters.append(pair)
        elif not equals:
            parameters.append(_hash(unquote_plus(name)))  # "?PID123": a bare value is a value too
        else:
            parameters.append(f"{name}={_query_value_digest(value) if value else ''}")
    return "?" + "&".join(parameters)


def _digest_identifiers(text: str) -> str:
    return _UID_IN_TEXT.sub(_digest, _QUERY_STRING.sub(_digest_query, text))


class _UidDigests(logging.Filter):
    """Replaces UIDs in access-log lines (request paths), and the values of query parameters that may name a patient
    or study, with the digest the audit log lines use."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.args = tuple(_digest_identifiers(a) if isinstance(a, str) else a for a in record.args)
        record.msg = _digest_identifiers(str(record.msg))
        return True


def _scrub_exception_text(text: str) -> str:
    text = _SQL_PARAMETERS.sub("[SQL parameters hidden]", text)
    text = _DRIVER_DETAIL.sub(r"\1 (hidden: it quotes row values)", text)
    return _UID_IN_TEXT.sub(_digest, text)


class _ScrubbedTracebacks(logging.Filter):
    """A handler filter: every traceback (and exception given as a log argument) loses SQL parameters, driver
    details that quote row values, and UIDs, whichever logger wrote it (uvicorn's "Exception in ASGI application",
    a worker's ``log.exception``). The formatter caches ``exc_text`` on the record, so every handler prints this
    scrubbed text and none formats the raw exception again."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = _scrub_exception_text("".join(traceback.format_exception(*record.exc_info)).rstrip("\n"))
        if isinstance(record.args, tuple) and any(isinstance(a, BaseException) for a in record.args):
            record.args = tuple(
                _scrub_exception_text(str(a)) if isinstance(a, BaseException) else a for a in record.args
            )
        return True


class _AppliedMigrationsOnly(logging.Filter):
    """Keeps Alembic's "Running upgrade a -> b" lines and drops its set-up chatter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or str(record.msg).startswith("Running ")


def configure_logging(level: str) -> None:
    """Configure the root logger of this process; where a host (pytest, say) already installed handlers, those stay."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT, datefmt=DATE_FORMAT)
    logging.Formatter.converter = time.gmtime  # UTC timestamps in every log line
    # At every level, DEBUG included: README promises that patient data is never logged.
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _ScrubbedTracebacks) for f in handler.filters):
            handler.addFilter(_ScrubbedTracebacks())
    if logging.getLogger().level > logging.DEBUG:
        for name in QUIET_LIBRARIES:
            logging.getLogger(name).setLevel(logging.WARNING)
        # pydicom's warnings quote raw header bytes of malformed files (patient names and IDs among them); the
        # quarantine keeps the reasons that matter, so they stay out of the log stream.
        logging.getLogger("pydicom").setLevel(logging.ERROR)
        warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
        access_log = logging.getLogger("uvicorn.access")
        if not any(isinstance(f, _UidDigests) for f in access_log.filters):
            access_log.addFilter(_UidDigests())
        migration_log = logging.getLogger("alembic.runtime.migration")
        if not any(isinstance(f, _AppliedMigrationsOnly) for f in migration_log.filters):
            migration_log.addFilter(_AppliedMigrationsOnly())


def run_configured(target: Callable[[str, str], None], settings_json: str, log_level: str) -> None:
    """Entry point of a process ``serve`` spawns: logging as in the parent, then ``target(settings_json, log_level)``."""
    configure_logging(log_level)
    target(settings_json, log_level)


def uid_digests(text: str) -> str:
    """``text`` with every DICOM UID replaced by its digest (what the access log shows)."""
    return _UID_IN_TEXT.sub(_digest, text)
