"""A receiver process: one DICOM listener sharing the port with its siblings (SO_REUSEPORT)."""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import warnings

from inference.ingest import InstanceIngestor
from inference.receive.dimse import AssociationLimits, start_dimse_server
from inference.spool import Spool
from inference.tls import receiver_ssl_context
from service.db import make_engine
from service.settings import Settings
from service.shutdown import stop_on_signals

__all__ = ["build_ingestor", "die_with_parent", "run_receiver_process"]


def build_ingestor(settings: Settings) -> InstanceIngestor:
    engine = make_engine(settings.resolved_database_url, serialise_writes=True)
    spool = Spool(settings.spool_dir, settings.quarantine_dir)
    return InstanceIngestor(settings, engine, spool)


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies, so no orphan keeps the DICOM port."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(1)


def run_receiver_process(settings_json: str, log_level: str) -> None:
    """Entry point of a receiver process (spawned by ``medscreen serve``); runs until SIGTERM."""
    die_with_parent()
    # Odd headers make pydicom warn per instance; the quarantine keeps the reasons that matter.
    warnings.filterwarnings("ignore", module="pydicom")
    settings = Settings.model_validate_json(settings_json)
    ingestor = build_ingestor(settings)
    server = start_dimse_server(
        ingestor,
        settings.dicom_host,
        settings.dicom_port,
        settings.dicom_ae_title,
        settings.dicom_allowed_aes,
        settings.dicom_max_pdu,
        AssociationLimits(
            settings.dicom_max_associations, settings.dicom_max_associations_per_peer, settings.dicom_idle_timeout_s
        ),
        receiver_ssl_context(settings),
    )
    stop = threading.Event()
    stop_on_signals(stop)
    stop.wait()
    server.shutdown()
