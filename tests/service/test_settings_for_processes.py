"""Spawned processes (scoring workers, receivers) get the settings with their secrets, not pydantic's mask."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from service.settings import Settings


def test_process_json_keeps_secrets_that_model_dump_json_masks(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, ingest_password=SecretStr("worker-password-long"), pacs_dicomweb_token=SecretStr("pacs-token")
    )
    assert "worker-password-long" not in settings.model_dump_json()  # what `medscreen serve` passed before
    spawned = Settings.model_validate_json(settings.process_json())
    assert spawned.ingest_password is not None and spawned.ingest_password.get_secret_value() == "worker-password-long"
    assert spawned.pacs_dicomweb_token is not None and spawned.pacs_dicomweb_token.get_secret_value() == "pacs-token"
    assert spawned.home == settings.home
