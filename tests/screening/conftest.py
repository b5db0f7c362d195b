"""Fixtures of the screening tests: the real knowledge base (built once per session, ~6 s), the shipped
screener, the real phenopacket fixtures, and a real app with real users and tokens."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from datasets.emr_records import ChildRecord, CodedFact, Measurement
from medscreen.app import create_app
from screening.findings import CodeMaps, load_code_maps
from screening.knowledge import KnowledgeBase, build_knowledge_base
from screening.ontology import Ontology, load_ontology
from screening.risk_model import load_risk_model
from screening.screener import Screener
from service.db import session_scope
from service.settings import Settings
from service.users import create_user
from tests.conftest import FIXTURES
from tests.service.conftest import database_url  # noqa: F401  (fixture: each test on SQLite and PostgreSQL)

PHENOPACKETS = FIXTURES / "screening" / "phenopackets"


@pytest.fixture(scope="session")
def ontology() -> Ontology:
    return load_ontology()


@pytest.fixture(scope="session")
def kb(ontology: Ontology) -> KnowledgeBase:
    return build_knowledge_base(ontology)


@pytest.fixture(scope="session")
def maps(ontology: Ontology) -> CodeMaps:
    return load_code_maps(ontology)


@pytest.fixture(scope="session")
def screener(ontology: Ontology, kb: KnowledgeBase, maps: CodeMaps) -> Screener:
    return Screener(ontology, kb, maps, load_risk_model(), budget=0.01)


@pytest.fixture
def phenopackets() -> Path:
    return PHENOPACKETS


def syndromic_child(patient_id: str = "child-syndromic") -> ChildRecord:
    """A 3-year-old girl with a Kabuki-like pattern over several organ systems and faltering growth."""
    birth = date(2021, 3, 1)
    record = ChildRecord(patient_id, birth, "F")
    for code, when in [
        ("Q21.1", date(2021, 3, 5)),
        ("Q35.9", date(2021, 3, 2)),
        ("P94.2", date(2021, 4, 1)),
        ("R62.0", date(2022, 6, 1)),
        ("F80.9", date(2023, 1, 10)),
        ("H90.3", date(2022, 2, 1)),
        ("Q65.8", date(2021, 5, 1)),
        ("R63.3", date(2021, 6, 1)),
        ("D84.9", date(2023, 6, 1)),
        ("H50.9", date(2022, 9, 1)),
    ]:
        record.facts.append(CodedFact("condition", "icd10", code, when))
    record.facts.append(CodedFact("condition", "hpo", "HP:0000316", date(2022, 1, 1)))  # hypertelorism
    record.measurements += [
        Measurement("8302-2", 49.0, "cm", date(2021, 3, 2)),
        Measurement("8302-2", 78.0, "cm", date(2022, 9, 1)),
        Measurement("8302-2", 85.0, "cm", date(2024, 1, 10)),
        Measurement("29463-7", 3.2, "kg", date(2021, 3, 2)),
        Measurement("29463-7", 10.0, "kg", date(2024, 1, 10)),
    ]
    return record


def ordinary_child(patient_id: str = "child-ordinary") -> ChildRecord:
    birth = date(2020, 5, 1)
    record = ChildRecord(patient_id, birth, "M")
    for code, when in [("J06.9", date(2021, 1, 1)), ("H66.9", date(2022, 2, 1)), ("R50.9", date(2022, 2, 1))]:
        record.facts.append(CodedFact("condition", "icd10", code, when))
    record.measurements.append(Measurement("8302-2", 96.0, "cm", date(2023, 5, 1)))
    return record


@pytest.fixture
def screening_backend(request: pytest.FixtureRequest) -> str:
    """SQLite unless a test asks for PostgreSQL too (``parametrize("screening_backend", [...], indirect=True)``)."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def screening_app(
    settings: Settings, screener: Screener, tmp_path: Path, screening_backend: str, request: pytest.FixtureRequest
) -> Iterator[FastAPI]:
    url = f"sqlite:///{tmp_path / 'screening.db'}" if screening_backend == "sqlite" else str(request.getfixturevalue("postgres_database_url"))
    app = create_app(settings.model_copy(update={"database_url": url}))
    app.state.screener = screener  # the real screener, shared across tests instead of rebuilt per app
    yield app
    app.state.engine.dispose()


@pytest.fixture
def client(screening_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(screening_app) as client:
        yield client


@pytest.fixture
def token_for(screening_app: FastAPI, client: TestClient):  # type: ignore[no-untyped-def]
    def make(username: str, *roles: str) -> dict[str, str]:
        password = f"{username}-password-long-enough"
        with session_scope(screening_app.state.session_factory) as session:
            create_user(session, username, password, roles, actor="test")
        response = client.post("/api/auth/token", data={"username": username, "password": password})
        assert response.status_code == 200, response.text
        return {"Authorization": f"Bearer {response.json()['access_token']}"}

    return make


@pytest.fixture(autouse=True)
def _medscreen_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Commands run by the tests (``screen-emr`` stores its results) write under the test's folder."""
    (tmp_path / "home").mkdir(exist_ok=True)
    monkeypatch.setenv("MEDSCREEN_HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir(exist_ok=True)  # an installation: only `serve` or --create-home makes a new home


def child_of(patient_id: str, name: str, mrn: str, practitioner: str = "", organization: str = "") -> ChildRecord:
    """A syndromic (flagged) child with a name, a record number and a care team."""
    record = syndromic_child(patient_id)
    record.name, record.mrn, record.practitioner, record.organization = name, mrn, practitioner, organization
    return record
