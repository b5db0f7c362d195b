"""A bounded, seeded fuzz run against a real `medscreen serve`, over C-STORE and STOW-RS (issue 14, Show).

Real files are sent first (the stored set), then mutants of them (most keep their UIDs). Invariants: the
service stays alive and answers; nothing is written outside the spool and the quarantine; no stored file
changes; ``spool/incoming`` is empty; the receiver and HTTP processes stay within a memory bound. A small
run on ``tests/fixtures`` always runs; a run of a few hundred mutants of ``../shared/data/dicom`` runs where
that folder exists (CI).
"""

from __future__ import annotations

import hashlib
import random
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from benchmarks.dcmtk import dcmtk
from tests.conftest import FIXTURES
from tests.inference.conftest import requires_dcmtk
from tests.peers import MedscreenService, wait_for
from tests.security.fuzz import corpus, mutate, process_group_peak_rss, send_c_store, send_stow

pytestmark = [pytest.mark.integration, requires_dcmtk]

MB = 1 << 20
MEMORY_BOUND = 1500 * MB
# What the service itself may write under its home besides the spool and the quarantine.
_HOME_FILES = ("medscreen.db", "mlflow.db", "secret_key", "initial-admin-password")
_HOME_FOLDERS = ("spool/studies", "spool/outgoing", "quarantine", "mlartifacts", "mlruns", "model-cache")


def _digests(root: Path) -> dict[Path, str]:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


def _outside_allowed(home: Path, before: set[Path]) -> list[Path]:
    odd = []
    for path in home.rglob("*"):
        if not path.is_file() or path in before:
            continue
        relative = path.relative_to(home).as_posix()
        if relative.split("/")[0].startswith(_HOME_FILES) or relative.startswith(_HOME_FOLDERS):
            continue
        odd.append(path)
    return odd


def _fuzz(
    tmp_path: Path, medscreen_service: Callable[..., MedscreenService], sources: list[Path], mutants_per_file: int, seed: int
) -> dict[str, object]:
    service = medscreen_service(quiet_period_s=600, max_instance_mb=64, quarantine_max_mb=64, dicom_receivers=1)
    headers = service.token_headers()
    assert service.process is not None
    pgid = service.process.pid

    # The stored set: the real files as sent by a PACS.
    originals = send_c_store(service.dicom_port, sources)
    studies = service.home / "spool" / "studies"
    stored = _digests(studies)
    assert sum(status == 0 for status in originals.values()) >= len(stored) > 0, "the stored set must not be empty"
    before = set(p for p in service.home.rglob("*") if p.is_file())

    rng = random.Random(seed)
    mutant_dir = tmp_path / "mutants"
    mutant_dir.mkdir()
    mutants = [
        mutate(source, mutant_dir / f"{n:04d}-{k}.dcm", rng)
        for n, source in enumerate(sources)
        for k in range(mutants_per_file)
    ]
    half = len(mutants) // 2
    dimse = send_c_store(service.dicom_port, [m.path for m in mutants[:half]])
    # What DIMSE could not carry (a file meta without valid UIDs) goes over STOW-RS with the other half.
    stow = send_stow(service.url, headers, [m.path for m in mutants[:half] if m.path not in dimse] + [m.path for m in mutants[half:]])

    # Alive and answering, on both edges.
    assert httpx.get(f"{service.url}/healthz", timeout=60).status_code == 200  # bounds a hang only
    assert service.dicom_ready()
    assert all(code in (200, 202, 409) for code in stow), stow
    # Nothing acknowledged before was changed or lost; new files only where they belong.
    after = _digests(studies)
    changed = [p for p, digest in stored.items() if after.get(p) != digest]
    assert not changed, f"{len(changed)} stored files changed or vanished: {changed[:3]}"
    assert not _outside_allowed(service.home, before)
    wait_for(lambda: not any((service.home / "spool" / "incoming").iterdir()), 120, "spool/incoming to be empty")
    peaks = process_group_peak_rss(pgid)
    assert peaks and max(peaks.values()) < MEMORY_BOUND, {pid: f"{rss / MB:.0f} MB" for pid, rss in peaks.items()}
    # Every file the service created is owner-only.
    loose = [p for p in service.home.rglob("*") if p.stat().st_mode & 0o077]
    assert not loose, loose[:5]
    answered = [status for status in dimse.values() if status is not None]
    figures = {"mutants": len(mutants), "stored_before": len(stored), "dimse_sent": len(dimse),
               "dimse_answered": len(answered), "stow_requests": len(stow),
               "peak_rss_mb": round(max(peaks.values()) / MB)}
    print("fuzz figures:", figures)
    return figures


def test_fuzz_fixtures_over_c_store_and_stow_rs(tmp_path: Path, medscreen_service) -> None:
    sources = sorted((FIXTURES / "inference").rglob("*.dcm"))
    figures = _fuzz(tmp_path, medscreen_service, sources, mutants_per_file=3, seed=14)
    assert figures["mutants"] >= 40 and figures["dimse_answered"] > 0


def test_fuzz_shared_corpus_over_c_store_and_stow_rs(tmp_path: Path, medscreen_service, shared_data: Path) -> None:
    sources = corpus(shared_data / "dicom", limit=100, seed=14)
    figures = _fuzz(tmp_path, medscreen_service, sources, mutants_per_file=3, seed=1414)
    assert figures["mutants"] >= 300 and figures["dimse_answered"] > 0


def test_receiver_survives_a_sender_that_hangs_up_mid_instance(tmp_path: Path, medscreen_service) -> None:
    """storescu killed mid-send: the association is cut, nothing is left in incoming, the next sender is served."""
    from benchmarks.study_factory import write_ct_study

    source = FIXTURES / "inference" / "ct" / "lidc-0002-0.dcm"
    files = write_ct_study(source, tmp_path / "study", 40)
    service = medscreen_service(dicom_receivers=1)
    sender = subprocess.Popen(
        [dcmtk("storescu"), "-aec", "MEDSCREEN", "127.0.0.1", str(service.dicom_port), *map(str, files)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    wait_for(lambda: any((service.home / "spool" / "studies").rglob("*.dcm")), 60, "the first instances")
    sender.kill()
    sender.wait()
    wait_for(lambda: not any((service.home / "spool" / "incoming").iterdir()), 60, "spool/incoming to be empty")
    assert service.dicom_ready()
