"""Logging for every medscreen entry point: the CLI, ``serve`` and the processes ``serve`` spawns.

One format (UTC timestamps, process name, logger name) to stderr. Chatty libraries are held at WARNING, and
Alembic's per-connection lines ("Context impl SQLiteImpl", "Will assume transactional DDL") are dropped on
every command, while the lines naming a migration it actually runs are kept. Nothing that names a patient or
a study reaches it, at any level, DEBUG included: pydicom's raw-byte warnings are dropped, the libraries that name
UIDs or FHIR ids in their lines stay at WARNING (with their UIDs as digests), access-log paths keep only the words of
medscreen's routes and query strings only the parameters that name no one (every other value becomes a digest), and
tracebacks lose SQL parameters and UIDs.
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
from urllib.parse import unquote, unquote_plus

__all__ = ["configure_logging", "run_configured", "uid_digests", "redact_request_target", "PLAIN_PATH_SEGMENTS"]

# ISO 8601 in UTC, marked as such: the bare "2026-12-02 12:51:08,986" of logging's default was UTC (the converter
# below) yet read as local time at a site whose journal and tickets are in its own zone.
FORMAT = "%(asctime)s.%(msecs)03dZ %(levelname)s %(processName)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%S"
# Libraries that log every association, request or registry call at INFO or DEBUG, held at WARNING at every level
# (MEDSCREEN_LOG_LEVEL=DEBUG turns on medscreen's own debug lines, not theirs): pynetdicom logs each C-STORE's SOP
# Instance UID, highdicom seven lines per result document naming the source image's UIDs, httpx and urllib3 each
# request's URL (a FHIR Patient/<id> of the EMR), dicomweb-client the study UIDs it stores or counts.
QUIET_LIBRARIES = ("pynetdicom", "mlflow", "urllib3", "httpx", "highdicom", "dicomweb_client")


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
# The literal words of medscreen's routes: a path segment among them is logged as sent. Every other segment (a study
# UID, a FHIR id, a patient ID, accession number or child id put in a path, a path no route has) is logged as the
# digest the audit lines use, as query values are. tests/security/test_log_hygiene.py keeps this set equal to the
# words of the app's routes.
PLAIN_PATH_SEGMENTS = frozenset({
    "DiagnosticReport", "Device", "Flag", "Observation", "RiskAssessment", "abandon", "api", "audit", "auth", "claim",
    "compare", "dicomweb", "docs", "drift", "events", "fhir", "filters", "flags", "healthz", "heatmap", "instances",
    "jobs", "logout", "me", "metadata", "metrics", "mlflow", "openapi.json", "outbox", "outcome", "outcomes", "outgoing", "priority-changes",
    "promote", "quality", "quarantine", "read", "release", "replay", "report", "rescore", "rollback", "screening",
    "series", "settings", "static", "steering", "studies", "tasks", "token", "unlock", "versions", "worklist",
})
# Values medscreen itself makes, which name no one, kept readable after the word of the route that takes them: row
# numbers (jobs, outgoing results, outbox messages, screening results), its own FHIR ids, the pages' files.
_ROW_NUMBER = re.compile(r"[0-9]{1,19}")
_OWN_FHIR_ID = re.compile(r"medscreen-[A-Za-z0-9.-]{1,64}")
_PLAIN_VALUE_AFTER = {
    "jobs": _ROW_NUMBER, "outgoing": _ROW_NUMBER, "outbox": _ROW_NUMBER, "flags": _ROW_NUMBER,
    "static": re.compile(r"[A-Za-z0-9_-]{1,64}\.(?:css|js|png|svg|ico|map)"),
    **dict.fromkeys(("DiagnosticReport", "Device", "Flag", "Observation", "RiskAssessment"), _OWN_FHIR_ID),
}
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
    return "?" + _digest_query_string(match.group(1))


def _digest_query_string(query: str) -> str:
    parameters = []
    for pair in query.split("&"):
        name, equals, value = pair.partition("=")
        if unquote_plus(name) in PLAIN_QUERY_PARAMETERS or not pair:
            parameters.append(pair)
        elif not equals:
            parameters.append(_hash(unquote_plus(name)))  # "?PID123": a bare value is a value too
        else:
            parameters.append(f"{name}={_query_value_digest(value) if value else ''}")
    return "&".join(parameters)


def _path_segment(segment: str, before: str) -> str:
    plain_after = _PLAIN_VALUE_AFTER.get(before)
    if segment in PLAIN_PATH_SEGMENTS or not segment or (plain_after and plain_after.fullmatch(segment)):
        return segment
    value = unquote(segment)
    return ("uid:" if _UID_IN_TEXT.fullmatch(value) else "") + _hash(value)


def redact_request_target(target: str) -> str:
    """A request's path and query as the access log shows them: the words of medscreen's routes and the values it
    makes itself as sent, every other path segment and query value as its digest (``/api/worklist/ACC123`` is
    logged ``/api/worklist/<digest>``: an accession number, patient ID or child id put in a path had been logged in
    clear, wherever a route takes a study UID or a FHIR id)."""
    path, question, query = target.partition("?")
    segments = path.split("/")
    redacted = [_path_segment(segment, segments[i - 1] if i else "") for i, segment in enumerate(segments)]
    return "/".join(redacted) + (question + _digest_query_string(query) if question else "")


def _digest_identifiers(text: str) -> str:
    return _UID_IN_TEXT.sub(_digest, _QUERY_STRING.sub(_digest_query, text))


def _access_argument(value: object) -> object:
    if not isinstance(value, str):
        return value
    # uvicorn's access line: (client address, method, path with query, HTTP version, status).
    return redact_request_target(value) if value.startswith("/") else _digest_identifiers(value)


class _UidDigests(logging.Filter):
    """Access-log lines: the request's path segments and query values that may name a patient or study become the
    digest the audit log lines use (``redact_request_target``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_access_argument(a) for a in record.args)
        record.msg = _digest_identifiers(str(record.msg))
        return True


class _LibraryUidDigests(logging.Filter):
    """A handler filter: what the identity-bearing libraries (``QUIET_LIBRARIES``, pydicom) still log, warnings and
    errors, has its UIDs as digests. Their own loggers' levels keep the chatter out; this keeps a UID out of a
    warning that quotes one, and out of any line should a level be lowered."""

    prefixes = tuple(name + "." for name in (*QUIET_LIBRARIES, "pydicom"))

    def filter(self, record: logging.LogRecord) -> bool:
        if not (record.name + ".").startswith(self.prefixes):
            return True
        if isinstance(record.args, tuple):
            record.args = tuple(uid_digests(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {k: uid_digests(v) if isinstance(v, str) else v for k, v in record.args.items()}
        record.msg = uid_digests(str(record.msg))
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


def _add_once(target: logging.Logger | logging.Handler, kind: type[logging.Filter]) -> None:
    if not any(isinstance(f, kind) for f in target.filters):
        target.addFilter(kind())


def configure_logging(level: str) -> None:
    """Configure the root logger of this process; where a host (pytest, say) already installed handlers, those stay."""
    logging.basicConfig(level=level.upper(), stream=sys.stderr, format=FORMAT, datefmt=DATE_FORMAT)
    logging.Formatter.converter = time.gmtime  # UTC timestamps in every log line
    # All of what follows at every level, DEBUG included: README promises that patient data is never logged, and
    # DEBUG is what an operator sets on a live site to look into a problem. It had all been skipped at DEBUG: the
    # access log wrote every path and query in clear, pynetdicom each SOP Instance UID, highdicom the source
    # image's UIDs, and pydicom's warnings quoted header values (a malformed birth date) from the receivers.
    for handler in logging.getLogger().handlers:
        _add_once(handler, _ScrubbedTracebacks)
        _add_once(handler, _LibraryUidDigests)
    # Never below the root's level: a library's WARNING would otherwise pass under MEDSCREEN_LOG_LEVEL=ERROR.
    quiet = max(logging.WARNING, logging.getLogger().getEffectiveLevel())
    for name in QUIET_LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    # pydicom's warnings quote raw header values of malformed files (patient names, IDs and birth dates among them);
    # the quarantine keeps the reasons that matter, so they stay out of the log stream.
    logging.getLogger("pydicom").setLevel(max(logging.ERROR, quiet))
    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    _add_once(logging.getLogger("uvicorn.access"), _UidDigests)
    _add_once(logging.getLogger("alembic.runtime.migration"), _AppliedMigrationsOnly)


def run_configured(target: Callable[[str, str], None], settings_json: str, log_level: str) -> None:
    """Entry point of a process ``serve`` spawns: logging as in the parent, then ``target(settings_json, log_level)``."""
    configure_logging(log_level)
    target(settings_json, log_level)


def uid_digests(text: str) -> str:
    """``text`` with every DICOM UID replaced by its digest (what the access log shows)."""
    return _UID_IN_TEXT.sub(_digest, text)
