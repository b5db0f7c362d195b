"""The instance limit and the free-disk watermark hold while a C-STORE or STOW-RS part streams in, not after.

Security review D2: a 98 MB instance was written in full under a 1 MB limit before 0xA700, and with the disk
under the watermark associations were accepted and each instance written before its refusal. D3: STOW-RS wrote
each part in full before its size check, and its body had no limit.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

from fastapi.testclient import TestClient
from pydicom import Dataset, dcmread
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from inference.ingest import InstanceIngestor
from inference.receive.dimse import start_dimse_server
from inference.tables import QuarantinedItem
from service.settings import Settings
from tests.security.bombs import CT
from tests.service.conftest import AddUser

MB = 1 << 20


def _ct_of(padding_mb: int) -> Dataset:
    """A real CT with a private element of ``padding_mb`` MB: large on the wire, small to build."""
    ds = dcmread(CT)
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if padding_mb:
        ds.add_new(0x00090010, "LO", "MEDSCREEN TEST")
        ds.add_new(0x00091000, "OB", b"\x00" * (padding_mb * MB))
    return ds


def _associate(port: int):
    ae = AE(ae_title="PACS")
    ae.acse_timeout = ae.network_timeout = ae.dimse_timeout = 10
    ae.add_requested_context(dcmread(CT, stop_before_pixels=True).SOPClassUID, "1.2.840.10008.1.2.1")
    return ae.associate("127.0.0.1", port, ae_title="MEDSCREEN")


@contextmanager
def _largest_incoming_file(incoming: Path) -> Iterator[list[int]]:
    """Watch ``incoming`` while the block runs; yields a one-item list holding the largest file size seen."""
    largest = [0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for path in list(incoming.iterdir()):
                try:
                    largest[0] = max(largest[0], path.stat().st_size)
                except FileNotFoundError:
                    pass
            done.wait(0.002)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield largest
    finally:
        done.set()
        watcher.join()


def test_an_instance_over_the_limit_is_refused_while_streaming_and_leaves_no_file(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    ingestor.max_instance_bytes = 1 * MB
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        assoc = _associate(sqlite_settings.dicom_port)
        assert assoc.is_established
        with _largest_incoming_file(ingestor.spool.incoming) as largest:
            status = assoc.send_c_store(_ct_of(24))
        assert status.Status == 0xA700, "README: larger than MEDSCREEN_MAX_INSTANCE_MB is refused 0xA700"
        assert largest[0] <= 1 * MB + 300_000, f"{largest[0]} bytes were written under a 1 MB limit"
        assert not any(ingestor.spool.incoming.iterdir()), "no partial file stays in incoming"
        # The association goes on: the next instance within the limit is stored.
        assert assoc.send_c_store(_ct_of(0)).Status == 0x0000
        assoc.release()
    finally:
        server.shutdown()
    with ingestor.engine.connect() as connection:
        refused = connection.execute(select(QuarantinedItem.kind, QuarantinedItem.path)).all()
    assert [tuple(row) for row in refused] == [("instance-too-large", None)], "a row with the reason, no bytes kept"
    assert not [p for p in ingestor.spool.quarantine.rglob("*") if p.is_file()]


def test_under_the_watermark_new_associations_are_refused_transiently(sqlite_settings: Settings) -> None:
    from inference.receive.process import build_ingestor

    starved = build_ingestor(sqlite_settings.model_copy(update={"min_free_disk_mb": 1 << 40}))
    server = start_dimse_server(starved, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        assoc = _associate(sqlite_settings.dicom_port)
        assert assoc.is_rejected, "README: below the watermark new associations are refused"
        assert assoc.acceptor.primitive.result == 0x02, "rejected-transient: the PACS retries later"
    finally:
        server.shutdown()
        starved.engine.dispose()


def test_a_store_arriving_under_the_watermark_is_refused_before_it_is_written(
    ingestor: InstanceIngestor, sqlite_settings: Settings
) -> None:
    server = start_dimse_server(ingestor, "127.0.0.1", sqlite_settings.dicom_port, "MEDSCREEN", [], 262144)
    try:
        assoc = _associate(sqlite_settings.dicom_port)
        assert assoc.is_established
        ingestor.min_free_bytes = 1 << 60  # the disk went under the watermark during the association
        with _largest_incoming_file(ingestor.spool.incoming) as largest:
            status = assoc.send_c_store(_ct_of(8))
        assert status.Status == 0xA700
        assert largest[0] < 64 * 1024, f"{largest[0]} bytes were written with the disk under the watermark"
        assert not any(ingestor.spool.incoming.iterdir())
        assoc.release()
    finally:
        server.shutdown()


def _stow_body(*instances: Dataset, chunk: int = 64 * 1024) -> tuple[Iterator[bytes], str]:
    """A STOW-RS body sent in ``chunk``-byte pieces (chunked transfer, no Content-Length), as a PACS streams it."""
    boundary = "medscreen-test-boundary"
    body = b""
    for ds in instances:
        out = BytesIO()
        ds.save_as(out, enforce_file_format=True)
        body += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + out.getvalue() + b"\r\n"
    body += f"--{boundary}--\r\n".encode()
    pieces = (body[start : start + chunk] for start in range(0, len(body), chunk))
    return pieces, f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_a_stow_part_over_the_limit_is_refused_while_streaming(client: TestClient, add_user: AddUser) -> None:
    ingestor: InstanceIngestor = client.app.state.ingestor  # type: ignore[attr-defined]
    ingestor.max_instance_bytes = 1 * MB
    sender = add_user("pacs", "sender")
    big, small = _ct_of(6), _ct_of(0)
    body, content_type = _stow_body(big, small)
    with _largest_incoming_file(ingestor.spool.incoming) as largest:
        response = client.post("/dicomweb/studies", content=body, headers={**sender, "Content-Type": content_type})
    assert response.status_code == 202, response.text
    failed = response.json()["00081198"]["Value"]
    assert [item["00081197"]["Value"][0] for item in failed] == [0xA700]
    assert failed[0]["00081155"]["Value"] == [big.SOPInstanceUID], "the refused part is named from its file meta"
    assert "instance-too-large" in failed[0]["0040A160"]["Value"][0]
    assert largest[0] <= 1 * MB + 64 * 1024, f"{largest[0]} bytes of a part were written under a 1 MB limit"
    assert not any(ingestor.spool.incoming.iterdir())
    assert not [p for p in ingestor.spool.quarantine.rglob("*") if p.is_file()], "nothing of the refused part is kept"


def test_a_stow_body_over_its_limit_gets_413_and_leaves_nothing(client: TestClient, add_user: AddUser) -> None:
    ingestor: InstanceIngestor = client.app.state.ingestor  # type: ignore[attr-defined]
    ingestor.max_stow_request_bytes = 2 * MB
    sender = add_user("pacs", "sender")
    body, content_type = _stow_body(_ct_of(1), _ct_of(1), _ct_of(1))
    response = client.post("/dicomweb/studies", content=body, headers={**sender, "Content-Type": content_type})
    assert response.status_code == 413, response.text
    assert "MEDSCREEN_MAX_STOW_REQUEST_MB" in response.json()["detail"]
    assert not any(ingestor.spool.incoming.iterdir()), "no partial part stays in incoming"
    assert not any(ingestor.spool.studies.iterdir()), "nothing of the request is stored"
    # A body that declares its length is refused before it is read.
    whole = b"".join(_stow_body(_ct_of(3))[0])
    response = client.post("/dicomweb/studies", content=whole, headers={**sender, "Content-Type": content_type})
    assert response.status_code == 413, response.text
