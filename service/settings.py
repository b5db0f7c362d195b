"""The one typed settings object of medscreen, read from ``MEDSCREEN_*`` environment variables.

Built once by the entry point (CLI, app factory) and passed down; library code never reads the
environment itself. Every field is documented in the README's settings table, and
``tests/service/test_settings_table.py`` keeps that table true.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import zlib
from collections.abc import Mapping
from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydicom.charset import python_encoding

__all__ = ["Settings", "DEFAULT_MAX_STUDY_DECODED_MB", "NOT_SETTINGS", "unknown_variables"]

# Substrings of secrets copied from examples and templates.
# A 300-slice 512x512 CT series takes about 0.5 GB (volume and search grid); a few kB of headers had asked for
# more than 8 GB. The scorers take the same default when called without the settings (benchmarks, tests).
DEFAULT_MAX_STUDY_DECODED_MB = 4096
_DEFAULT_SECRET_WORDS = ("changethis", "changeme", "change-me", "change_me", "secret", "password", "default", "example")


def _looks_patterned(secret: str) -> bool:
    """A repeated or sequential key ("0123456789" * 4, "abcdef..."): it compresses well or runs in steps.

    Random keys from ``secrets`` compress to about their own length and have no run of 6 neighbouring characters.
    """
    if len(zlib.compress(secret.encode(), 9)) < 0.8 * len(secret):
        return True
    run, step = 1, None
    for previous, current in zip(secret, secret[1:], strict=False):
        delta = ord(current) - ord(previous)
        run = run + 1 if delta == step and delta in (-1, 0, 1) else 2
        step = delta
        if run >= 6:
            return True
    return False


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MEDSCREEN_", extra="ignore")

    home: Path = Field(
        Path("./var"),
        description="Data directory: database, spool, quarantine, MLflow store. Made absolute once, at start; "
        "only `medscreen serve` (or a command given `--create-home`) creates it.",
    )
    http_host: str = Field("127.0.0.1", description="Address the HTTP API binds to.")
    http_port: int = Field(8000, description="Port of the HTTP API (REST, STOW-RS, pages).")
    http_header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A connection whose request headers are not complete this long after it opened (or after the "
        "request's first bytes) is closed: a client sending part of a request (slowloris) no longer holds it.",
    )
    dicom_host: str = Field(
        "127.0.0.1", description="Address the DICOM receiver binds to; set 0.0.0.0 to accept the PACS over the network."
    )
    dicom_port: int = Field(11112, description="Port of the DICOM receiver (C-ECHO, C-STORE).")
    dicom_ae_title: str = Field("MEDSCREEN", description="AE title of the DICOM receiver.")
    dicom_allowed_aes: list[str] = Field(
        default_factory=list,
        description='Calling AE titles allowed to associate, as JSON (`["ORTHANC","PACS1"]`); empty accepts any AE and logs it.',
    )
    dicom_receivers: int = Field(
        2, description="Receiving processes sharing the DICOM port (SO_REUSEPORT); one association is served by one process."
    )
    dicom_max_associations: int = Field(
        32, ge=1, description="Associations one receiver process serves at once; more are rejected (transient)."
    )
    dicom_max_associations_per_peer: int = Field(
        8,
        ge=1,
        description="Associations one peer address may hold at once per receiver process; more are refused, so one "
        "sender cannot lock the others out.",
    )
    dicom_idle_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Seconds an association may stay silent (no PDU) before it is aborted; also the DIMSE and ACSE timeouts.",
    )
    dicom_max_pdu: int = Field(
        262144, description="Maximum PDU size the receiver offers; large PDUs cut per-PDU overhead on big images."
    )
    dicom_default_charset: str = Field(
        "ISO_IR 100",
        description="Character set (a DICOM Specific Character Set term) of 8-bit text in instances that declare none "
        "or only the default repertoire (`ISO_IR 6`), as modalities writing their local code page send it: the names "
        "and descriptions on the worklist and to the RIS are read in it, and the SR and heat-map write them in UTF-8 "
        "(`ISO_IR 192`). `ISO_IR 100` (Latin-1) is what pydicom and Orthanc's `DefaultEncoding` assume; `ISO_IR 192` "
        "for modalities that write UTF-8, `GB18030` for Chinese ones, `ISO_IR 144` Cyrillic, `ISO_IR 101` Central "
        "European. In `ISO_IR 100` text, bytes 0x80-0x9F are read as Windows-1252 (Š, Ž, €), declared or not.",
    )
    dicom_tls_cert: Path | None = Field(
        None, description="Certificate (PEM) of medscreen's DICOM node; with MEDSCREEN_DICOM_TLS_KEY the receiver speaks "
        "DICOM over TLS only, and it is the client certificate medscreen shows a PACS over TLS."
    )
    dicom_tls_key: Path | None = Field(None, description="Private key (PEM, unencrypted) of MEDSCREEN_DICOM_TLS_CERT.")
    dicom_tls_ca: Path | None = Field(
        None, description="CA certificates (PEM) trusted for senders' client certificates and for the PACS's certificate."
    )
    dicom_tls_require_client_cert: bool = Field(
        False, description="Receiver over TLS: refuse senders without a client certificate signed by MEDSCREEN_DICOM_TLS_CA."
    )
    pacs_tls: bool = Field(
        False, description="Speak TLS to the PACS (write-back, C-FIND counts, backfill), verifying its certificate "
        "against MEDSCREEN_DICOM_TLS_CA and its host name against MEDSCREEN_PACS_HOST."
    )
    spool_path: Path | None = Field(
        None, description="Spool folder (received instances, result documents); default `$MEDSCREEN_HOME/spool`. "
        "On a `medscreen worker` machine: the ingest node's spool, mounted at the same path.",
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default `sqlite:///$MEDSCREEN_HOME/medscreen.db`. PostgreSQL: `postgresql+psycopg://user:pw@host/db`."
    )
    mlflow_tracking_uri: str | None = Field(
        None,
        description=(
            "MLflow tracking and registry URI; default `sqlite:///$MEDSCREEN_HOME/mlflow.db`. MLflow's own "
            "`MLFLOW_TRACKING_URI` / `MLFLOW_REGISTRY_URI` in the environment do not choose the store: models come "
            "from this one."
        ),
    )
    quiet_period_s: float = Field(
        10.0, description="Seconds without a new instance after which a study is considered complete."
    )
    quiet_period_by_modality: dict[str, float] = Field(
        default_factory=dict, description='Per-modality quiet periods as JSON, e.g. `{"CT": 20, "MG": 5}`.'
    )
    completeness_poll_s: float = Field(1.0, description="How often the completeness monitor looks for quiet studies.")
    pacs_qido_url: str | None = Field(
        None, description="QIDO-RS base URL of the PACS (e.g. `http://pacs:8042/dicom-web`); enables the instance-count completeness signal."
    )
    pacs_ae_title: str | None = Field(None, description="AE title of the PACS for C-FIND count queries (used when no QIDO-RS URL).")
    pacs_host: str | None = Field(None, description="Host of the PACS for C-FIND and C-STORE write-back.")
    pacs_port: int | None = Field(None, description="DICOM port of the PACS.")
    pacs_stow_url: str | None = Field(
        None, description="DICOMweb base URL of the PACS (e.g. `http://pacs:8042/dicom-web`); when set, results are "
        "written back by STOW-RS instead of C-STORE (for a PACS that only speaks DICOMweb)."
    )
    pacs_dicomweb_token: SecretStr | None = Field(None, description="Bearer token for the PACS's DICOMweb endpoint, if it needs one.")
    routes_file: Path | None = Field(
        None, description="Routing rules (YAML); default the shipped `inference/default_routes.yaml`."
    )
    min_free_disk_mb: int = Field(
        512, description="Free-disk watermark under MEDSCREEN_HOME; below it new associations and stores are refused (0xA700)."
    )
    max_instance_mb: int = Field(
        2048,
        description="Largest instance accepted, as received, once a deflated data set is inflated, and as the pixel "
        "data declares once decoded; checked while streaming, before anything is decoded. Larger ones are refused (0xA700).",
    )
    max_study_decoded_mb: int = Field(
        DEFAULT_MAX_STUDY_DECODED_MB,
        ge=1,
        description="Most memory a study's scoring may decode into, computed from its headers before any pixel is "
        "decoded (a CT series' volume and candidate search grid); a larger study is not scored (could not score, with "
        "the reason).",
    )
    max_request_mb: int = Field(
        32,
        ge=1,
        description="Largest HTTP request body outside STOW-RS (FHIR bundles, CSV extracts, forms); larger ones get 413 "
        "before being parsed.",
    )
    max_stow_request_mb: int = Field(
        4096,
        ge=1,
        description="Largest STOW-RS request body, all its parts together; a larger one gets 413 while it streams and "
        "nothing of it is kept (each part is also limited by MEDSCREEN_MAX_INSTANCE_MB).",
    )
    quarantine_max_mb: int = Field(
        1024,
        ge=0,
        description="Quota of refused files kept in the quarantine folder; past it a refusal is still recorded with its "
        "reason but its bytes are not kept.",
    )
    retention_read_days: float = Field(
        14.0,
        gt=0,
        description="Retention: a study's received files are removed this long after its final read (never before a "
        "final read); the removal is audited.",
    )
    retention_not_applicable_days: float = Field(
        14.0,
        gt=0,
        description="Retention: files of a study no routing rule matched (never on the reading list; the PACS has the "
        "originals) are removed this long after it completed.",
    )
    retention_sent_days: float = Field(
        14.0,
        gt=0,
        description="Retention: results built for the PACS (spool/outgoing) are removed this long after they were "
        "made, once sent and once the study has a final read later than the result.",
    )
    retention_quarantine_days: float = Field(
        30.0, gt=0, description="Retention: refused files are removed from the quarantine this long after they arrived."
    )
    retention_interval_s: float = Field(
        3600.0, gt=0, description="How often `medscreen serve` runs the retention cleaner."
    )
    log_level: str = Field("INFO", description="Logging level of the service.")
    scoring_workers: int = Field(
        1, ge=0, description="Scoring worker processes (each runs ONNX Runtime with MEDSCREEN_ORT_THREADS); 0 on an "
        "ingest node whose scoring is all done by `medscreen worker` machines."
    )
    ort_threads: int = Field(2, description="ONNX Runtime intra-op threads per scoring worker.")
    model_refresh_s: float = Field(
        10.0, description="How often workers re-read the `champion`/`challenger` aliases in the MLflow registry (hot swap)."
    )
    scoring_poll_s: float = Field(0.5, description="How often an idle scoring worker looks for routed studies and jobs.")
    scoring_lease_s: float = Field(
        30.0,
        gt=0,
        description="Lease of a claimed scoring job, renewed by the worker every third of it while the job runs; a job "
        "whose worker died is retaken when its lease runs out, or at once when its worker process is seen gone.",
    )
    scoring_max_attempts: int = Field(5, description="Attempts before a scoring job goes to the dead-letter state.")
    scoring_retry_base_s: float = Field(5.0, description="First retry delay of a failed scoring job; doubles per attempt.")
    ingest_url: str | None = Field(
        None, description="Base URL of the ingest node (`medscreen serve`, e.g. `https://ingest:8000`) for a "
        "`medscreen worker` without the ingest node's spool: each job's instances are fetched over WADO-RS into "
        "`$MEDSCREEN_HOME/instance-cache` before scoring (the recorded paths are not read)."
    )
    ingest_username: str | None = Field(
        None, description="Account on the ingest node a fetching worker logs in with (role `sender`)."
    )
    ingest_password: SecretStr | None = Field(None, description="Password of MEDSCREEN_INGEST_USERNAME.")
    ingest_ca_file: Path | None = Field(
        None, description="CA bundle that signs the ingest node's HTTPS certificate (default: the system's)."
    )
    node_id: str | None = Field(
        None, description="This node's name on the results whose SR and heat-map its spool holds (`outgoing_results.node`; "
        "each node's dispatcher sends only its own). Default `<hostname>:<MEDSCREEN_HOME>`. Kept in the spool "
        "(`spool/node-id`) at first start: a worker with the ingest node's spool mounted sends as the ingest node."
    )
    ct_min_slices: int = Field(10, description="Fewest slices of an axial CT series that can be scored.")
    writeback: bool = Field(
        True, description="Send results (SR + heat-map) to the PACS: by STOW-RS when MEDSCREEN_PACS_STOW_URL is set, "
        "else by C-STORE when MEDSCREEN_PACS_AE_TITLE/HOST/PORT are set."
    )
    writeback_shadow: bool = Field(
        False, description="Also send results of champion versions whose steering right is `shadow` to the PACS (SR + "
        "heat-map), the RIS (ORU) and the EMR (FHIR push), and serve them at `GET /fhir/...`. Off by default: a shadow version is recorded for monitoring and "
        "its card says it must not be shown as a finding (mammography's cross-validated AUROC is 0.58)."
    )
    dispatch_max_attempts: int = Field(
        8, ge=1, description="Attempts to send a stored result (the same files each time) before it is marked failed."
    )
    dispatch_retry_base_s: float = Field(
        5.0, ge=0, description="First retry delay of a failed send of a stored result; doubles per attempt (capped at 1 h)."
    )
    dispatch_lease_s: float = Field(120.0, gt=0, description="Lease of a result being sent; a dead worker's send is retaken after it.")
    secret_key: SecretStr | None = Field(
        None,
        description="Key that signs login tokens (at least 32 random characters); unset: generated at first start "
        "and kept in `$MEDSCREEN_HOME/secret_key` (mode 0600). Obvious defaults are refused.",
    )
    login_max_failures: int = Field(
        5, ge=1, description="Failed logins in a row after which an account is locked (an admin can lift it earlier)."
    )
    login_lockout_minutes: float = Field(
        15.0, gt=0, description="How long a locked account stays locked, unless an admin unlocks it first."
    )
    login_address_max_failures: int = Field(
        20,
        ge=1,
        description="Failed logins from one address within MEDSCREEN_LOGIN_LOCKOUT_MINUTES after which that address "
        "gets 429 without a password check.",
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='Addresses (or networks) of reverse proxies whose X-Forwarded-For and X-Forwarded-Proto are believed, '
        'as JSON (`["10.1.2.3"]`). Empty: no one\'s, so logins are counted and audited under the connecting address; a '
        'client had chosen its own by sending X-Forwarded-For from the server itself.',
    )
    access_token_minutes: int = Field(
        480, ge=1, description="Lifetime of a login token in minutes (default: one 8-hour shift)."
    )
    screening_alert_budget: float = Field(
        0.01,
        gt=0,
        le=1,
        description="Rare-disease screening: flags per child screened that paediatricians can review (0.01 = 1 per 100); "
        "sets the risk threshold.",
    )
    screening_risk_threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Rare-disease screening: the site's own alert threshold, from `medscreen screening calibrate` on "
        "its children; replaces the one the alert budget gives on simulated children. Unset: from the budget.",
    )
    screening_max_age_years: float = Field(
        7.0, gt=0, le=18, description="Rare-disease screening: only children younger than this are screened."
    )
    screening_model_path: Path | None = Field(
        None, description="Rare-disease screener artefact (JSON); default the shipped `screening/data/screener.json`."
    )
    steering_defer_min_studies: int = Field(
        200, ge=1, description="A model version earns the `defer` steering right only from a validation on another "
        "source than its training data (a site's confirmed studies, a held-out source) with at least this many studies."
    )
    steering_defer_min_auroc_ci_low: float = Field(
        0.85, ge=0, le=1, description="... and a lower 95% bound of AUROC at least this high."
    )
    steering_defer_min_specificity: float = Field(
        0.70, ge=0, le=1, description="... and a lower 95% bound of specificity at the version's operating point at least "
        "this high."
    )
    steering_defer_min_sensitivity: float = Field(
        0.90, ge=0, le=1, description="... and a lower 95% bound of sensitivity at the version's operating point at least "
        "this high: the positives it calls negative are the ones deferral makes wait (at sensitivity 0.95 the bound "
        "reaches 0.90 from about 127 positives)."
    )
    uid_root: str = Field(
        "1.2.826.0.1.3680043.8.498.77.",
        pattern=r"^([0-9]+\.)+$",
        description="UID root of every UID medscreen makes (results, series); instances under it are recognised as "
        "medscreen's own output and never re-ingested. A site with its own root sets it (ending with a dot).",
    )
    worklist_aging_cap_minutes: float = Field(
        90.0,
        gt=0,
        description="Worklist aging cap: a study waits at most this long behind model-positive studies that came later "
        "(a champion-negative study of a `defer` version is deferred at most this long), then goes back to its "
        "arrival place ahead of them. The longest cap, held to the urgent lead, is also how far a positive call "
        "raises a study. About a quarter to a third of the list's p99 wait (see benchmarks/prioritisation.py --sweep).",
    )
    worklist_aging_cap_by_modality: dict[str, float] = Field(
        default_factory=dict, description='Per-modality aging caps in minutes as JSON, e.g. `{"CT": 30, "MG": 240}`.'
    )
    worklist_stat_lead_minutes: float = Field(
        1440.0,
        ge=0,
        description="Worklist: a STAT order is due this long before a routine study of the same arrival that was raised "
        "or has settled (24 h: above everything not STAT); the model never lowers it.",
    )
    worklist_urgent_lead_minutes: float = Field(
        120.0,
        ge=0,
        description="Worklist: a HIGH/URGENT/ASAP order is due this long before a routine study of the same arrival that "
        "was raised or has settled; never lowered by the model.",
    )
    worklist_claim_minutes: float = Field(
        60.0, gt=0, description="Worklist: a claim not closed by a read lapses after this long and another radiologist may claim."
    )
    worklist_recompute_s: float = Field(
        2.0,
        gt=0,
        description="Worklist: how often new studies and champion results are taken into the list and studies whose aging cap ran out settled in their arrival place.",
    )
    quality_psi_alert: float = Field(
        0.2, gt=0, description="Quality: a week's score (or header) PSI above this against the reference raises a drift alert."
    )
    quality_flag_rate_alert: float = Field(
        0.10,
        gt=0,
        description="Quality: a week's flag rate further than this (absolute) from the first weeks' raises an alert.",
    )
    quality_drift_min_week_n: int = Field(
        100,
        ge=1,
        description="Quality: a week with fewer scored studies is shown but raises no drift alert (the PSI of n studies "
        "is about 9/n by chance).",
    )
    quality_baseline_weeks: int = Field(
        2, ge=1, description="Quality: weeks in service that form the drift reference when the bundle has no validation histogram."
    )
    quality_drift_min_baseline_n: int = Field(
        100,
        ge=1,
        description="Quality: a version whose first weeks in service hold fewer scored studies raises no flag-rate or "
        "header drift alert (at 100 the Wilson 95% interval of the baseline's flag rate is at most 0.096 wide each side).",
    )
    quality_gate_min_studies: int = Field(
        400, ge=1, description="Promotion gate: confirmed studies both champion and challenger must have scored."
    )
    quality_gate_min_class_fraction: float = Field(
        0.10, ge=0, lt=0.5, description="Promotion gate: the least share of confirmed positives and of negatives."
    )
    quality_gate_alpha: float = Field(
        0.05, gt=0, lt=1, description="Promotion gate: the challenger's sensitivity and specificity drops against the "
        "champion are judged on their two-sided (1 - alpha) intervals (the one-sided McNemar p is reported for "
        "information)."
    )
    quality_gate_margin: float = Field(
        0.05, gt=0, lt=1, description="Promotion gate (non-inferiority): the upper bound of the interval of the "
        "challenger's paired sensitivity drop against the champion, and of its specificity drop, must be below this."
    )
    quality_max_unscored_share: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Promotion gate: above this share of could-not-score studies among the challenger's studies in intended use "
        "that a radiologist read, the gate refuses (the comparison covers only studies both versions scored).",
    )

    ris_host: str | None = Field(
        None, description="Host of the RIS's HL7 v2.5.1 MLLP listener; unset: nothing is sent to the RIS."
    )
    ris_port: int | None = Field(None, description="Port of the RIS's MLLP listener.")
    ris_sending_application: str = Field("MEDSCREEN", description="HL7 MSH-3 sending application.")
    ris_sending_facility: str = Field("", description="HL7 MSH-4 sending facility.")
    ris_receiving_application: str = Field("RIS", description="HL7 MSH-5 receiving application.")
    ris_receiving_facility: str = Field("", description="HL7 MSH-6 receiving facility.")
    ris_timeout_s: float = Field(10.0, gt=0, description="Seconds to connect to the RIS and to wait for its ACK.")
    ris_retry_s: float = Field(
        30.0, gt=0, description="Wait before a message the RIS did not take (down, timed out, NAK AE) is offered again."
    )
    ris_max_attempts: int = Field(
        10, ge=1, description="NAK AE answers before a message is set aside (a RIS that is down is waited for without limit)."
    )
    fhir_push_url: str | None = Field(
        None, description="FHIR R4 base URL of the EMR; results and screening flags are PUT there. Unset: not pushed."
    )
    fhir_push_token: SecretStr | None = Field(None, description="Bearer token for the EMR's FHIR endpoint, if it needs one.")
    fhir_timeout_s: float = Field(10.0, gt=0, description="Seconds to wait for the EMR's FHIR endpoint.")
    fhir_retry_s: float = Field(30.0, gt=0, description="Wait before a resource the EMR did not take is offered again.")
    fhir_max_attempts: int = Field(
        10, ge=1, description="HTTP 5xx answers before a resource is set aside (4xx: at once; unreachable: never)."
    )
    outbox_poll_s: float = Field(
        2.0, gt=0, description="How often the RIS and EMR feeds take in new results and send what is waiting."
    )
    healthz_max_wait_s: float = Field(
        900.0,
        gt=0,
        description="`/healthz` answers 503 \"degraded\" while a study has waited longer than this to be completed, "
        "routed or scored (a scoring worker or background loop hung, not dead), or a message to the RIS or EMR, or a "
        "result for the PACS, has waited longer than this to be sent (a peer down, or one that closes the connection "
        "without acknowledging).",
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        # Resolved once, here: every path under it is then the same whatever folder a process later runs in.
        return value.expanduser().resolve()

    @field_validator("dicom_ae_title", "pacs_ae_title", "dicom_allowed_aes")
    @classmethod
    def _dicom_ae_titles(cls, value: str | list[str] | None, info: ValidationInfo) -> str | list[str] | None:
        # PS3.5 AE: 1 to 16 characters, no backslash or control character. pynetdicom refuses any other when it
        # builds the AE, and that had been at each receiver process's start (a crash, restarted for ever, the
        # service 'degraded'), at each write-back (a failed attempt per study) or at each count query.
        for title in [value] if isinstance(value, str) else value or []:
            if info.field_name == "pacs_ae_title" and title == "":
                continue  # no PACS, as when unset
            if not title.strip() or len(title.strip()) > 16 or any(c == "\\" or ord(c) < 32 for c in title):
                name = f"MEDSCREEN_{info.field_name.upper()}" if info.field_name else "an AE title setting"
                raise ValueError(
                    f"{name}: {title!r} is not a DICOM AE title (1 to 16 characters, no backslash or control character)"
                )
        return value

    @field_validator("dicom_default_charset")
    @classmethod
    def _stand_alone_charset(cls, value: str) -> str:
        # One stand-alone character set beyond the default repertoire: ISO 2022 sets need escape sequences that
        # undeclared text cannot hold, and ISO_IR 6 is the default repertoire itself.
        known_terms = sorted(t for t in python_encoding if t not in ("", "ISO_IR 6") and not t.startswith("ISO 2022"))
        term = value.strip()
        if term not in known_terms:
            known = ", ".join(known_terms)
            raise ValueError(f"MEDSCREEN_DICOM_DEFAULT_CHARSET {value!r} is not one of the DICOM terms {known}")
        return term

    @field_validator("trusted_proxies")
    @classmethod
    def _proxy_addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            try:
                ipaddress.ip_network(address.strip(), strict=False)
            except ValueError:
                raise ValueError(
                    f"MEDSCREEN_TRUSTED_PROXIES: {address!r} is not an IP address or network (such as 10.1.2.3 or 10.1.2.0/24)"
                ) from None
        return [address.strip() for address in value]

    @field_validator("secret_key")
    @classmethod
    def _refuse_default_secret(cls, value: SecretStr | None) -> SecretStr | None:
        # A guessable signing key lets anyone mint an admin token; refuse it rather than warn.
        if value is None:
            return value
        secret = value.get_secret_value()
        lowered = secret.lower()
        if (
            len(secret) < 32
            or len(set(secret)) < 8
            or any(word in lowered for word in _DEFAULT_SECRET_WORDS)
            or _looks_patterned(secret)
        ):
            raise ValueError(
                "MEDSCREEN_SECRET_KEY looks like a default or weak secret: use at least 32 random characters, "
                "e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`, or leave it unset"
            )
        return value

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home.resolve() / 'medscreen.db'}"

    @property
    def resolved_mlflow_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home.resolve() / 'mlflow.db'}"

    def process_json(self) -> str:
        """These settings for a spawned process, secrets included (``model_dump_json`` masks SecretStr values,
        which left a scoring process with ``**********`` as its passwords and tokens)."""
        data = self.model_dump(mode="json")
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                data[name] = value.get_secret_value()
        return json.dumps(data)

    @property
    def spool_dir(self) -> Path:
        return self.spool_path or self.home / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    def quiet_period_for(self, modality: str | None) -> float:
        if modality and modality in self.quiet_period_by_modality:
            return self.quiet_period_by_modality[modality]
        return self.quiet_period_s


# MEDSCREEN_ names that are no setting, read by the test suite and the benchmarks only (never by medscreen itself):
# the folder of the shared data, the PostgreSQL binaries, where the page tests keep their screenshots.
NOT_SETTINGS = frozenset({"MEDSCREEN_SHARED_DATA", "MEDSCREEN_POSTGRES_BIN", "MEDSCREEN_SCREENSHOT_DIR"})


def unknown_variables(environ: Mapping[str, str]) -> dict[str, str | None]:
    """Each ``MEDSCREEN_*`` name in ``environ`` that names no setting (nor one of :data:`NOT_SETTINGS`), as it was set,
    with the variable it most likely meant (difflib; None when none is close).

    pydantic-settings ignores such a name: a misspelt ``MEDSCREEN_DICOM_ALLOWED_AE`` had left any calling AE accepted,
    without a word. Names are compared without regard to case, as the settings are read."""
    prefix = Settings.model_config.get("env_prefix", "")
    fields = [name.upper() for name in Settings.model_fields]
    unknown: dict[str, str | None] = {}
    for key in sorted(environ):
        name = key.upper()
        if not name.startswith(prefix) or name in NOT_SETTINGS or name[len(prefix):] in fields:
            continue
        # Compared without the prefix every name shares, which would make any two names look alike.
        close = difflib.get_close_matches(name[len(prefix):], fields, n=1)
        unknown[key] = f"{prefix}{close[0]}" if close else None
    return unknown
