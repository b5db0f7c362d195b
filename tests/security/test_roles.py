"""STOW-RS is for sending systems: the `sender` role (or admin); other roles cannot inject studies."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.inference.test_stowrs import CT, post
from tests.service.conftest import AddUser


@pytest.mark.parametrize("role", ["paediatrician", "quality", "ml-engineer", "radiologist"])
def test_roles_other_than_sender_cannot_store_over_stow_rs(client: TestClient, add_user: AddUser, role: str) -> None:
    user = add_user(f"not-a-sender-{role}", role)
    response = post(client, user, CT[0])
    assert response.status_code == 403, response.text
    assert client.get("/api/studies", headers=add_user("viewer", "ml-engineer")).json()["total"] == 0


def test_a_sender_stores_and_sees_nothing_else(client: TestClient, add_user: AddUser) -> None:
    sender = add_user("pacs", "sender")
    assert post(client, sender, CT[0]).status_code == 200
    for path in ("/api/studies", "/api/worklist", "/api/quarantine", "/api/audit"):
        assert client.get(path, headers=sender).status_code == 403, path
