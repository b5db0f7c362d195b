"""STOW-RS refusing for want of disk answers 503 with a Retry-After, so that a sender waits before it sends again
(review: http_cli defect 2). The real app; the free disk the ingestor reads is made low, or its files full."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from inference.ingest import InstanceIngestor
from inference.receive.stowrs import RETRY_AFTER_S
from tests.inference.test_stowrs import CT, SMALL_DX, post
from tests.service.conftest import AddUser

pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)


def retry_after(response) -> int:  # type: ignore[no-untyped-def]
    assert response.status_code == 503, response.text
    assert "retry later" in response.json()["detail"]
    return int(response.headers["retry-after"])


def test_every_503_of_stow_rs_says_when_to_retry(
    client: TestClient, add_user: AddUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingestor: InstanceIngestor = client.app.state.ingestor  # type: ignore[attr-defined]
    sender = add_user("pacs-sender", "sender")
    assert RETRY_AFTER_S > 0

    # Under the watermark before the body is read.
    with monkeypatch.context() as patch:
        patch.setattr(ingestor, "has_free_disk", lambda: False)
        assert retry_after(post(client, sender, *CT)) == RETRY_AFTER_S
    # Going under it between parts.
    with monkeypatch.context() as patch:
        patch.setattr(ingestor, "has_free_disk", lambda: len(list(ingestor.spool.incoming.iterdir())) < 2)
        assert retry_after(post(client, sender, *CT)) == RETRY_AFTER_S
    # A full disk found on a write (ENOSPC).
    if Path("/dev/full").exists():
        new_incoming_path = ingestor.spool.new_incoming_path

        def onto_a_full_disk() -> Path:
            path = new_incoming_path()
            path.symlink_to("/dev/full")
            return path

        with monkeypatch.context() as patch:
            patch.setattr(ingestor.spool, "new_incoming_path", onto_a_full_disk)
            assert retry_after(post(client, sender, SMALL_DX)) == RETRY_AFTER_S
    assert not any(ingestor.spool.incoming.iterdir()) and not any(ingestor.spool.studies.iterdir())
    # Stored once there is room again.
    assert post(client, sender, *CT).status_code == 200
