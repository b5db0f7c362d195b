"""A backfill that medscreen refused in part for now (disk under the watermark) is not recorded as finished:
the PACS (a real pynetdicom C-GET SCP) ends such a C-GET with 0xB000, and the next run retrieves the study again."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from pydicom import dcmread
from pynetdicom import AE, StoragePresentationContexts, evt
from pynetdicom.events import Event
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet  # type: ignore[attr-defined]

from inference.backfill import BACKFILLED, PacsStudy, run_backfill
from inference.ingest import InstanceIngestor
from service.db import make_session_factory
from tests.conftest import free_port
from tests.inference.conftest import INFERENCE_FIXTURES

CT = [dcmread(INFERENCE_FIXTURES / "ct" / f"lidc-0002-{index}.dcm") for index in range(3)]


def test_a_study_refused_in_part_for_lack_of_disk_is_retrieved_again(ingestor: InstanceIngestor) -> None:
    free_bytes = ingestor.min_free_bytes

    def on_get(event: Event) -> Iterator[object]:
        yield len(CT)
        for index, dataset in enumerate(CT):
            if index == 1 and full_after_first:
                ingestor.min_free_bytes = 2**62  # the disk reaches the watermark after the first instance
            yield 0xFF00, dataset

    pacs = AE(ae_title="PACS")
    pacs.add_supported_context(StudyRootQueryRetrieveInformationModelGet)
    for context in StoragePresentationContexts:
        pacs.add_supported_context(context.abstract_syntax, scu_role=True, scp_role=True)
    port = free_port()
    server = pacs.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_GET, on_get)])
    factory = make_session_factory(ingestor.engine)
    study = PacsStudy(str(CT[0].StudyInstanceUID), "20240101", ("CT",), len(CT))
    peer = {"host": "127.0.0.1", "port": port, "called_ae": "PACS", "calling_ae": "MEDSCREEN"}
    database = ingestor.settings.home / "medscreen.db"
    try:
        full_after_first = True
        first = run_backfill(ingestor, factory, [study], **peer)  # type: ignore[arg-type]
        assert (first.stored, first.refused, first.retrieved_studies, first.failed_studies) == (1, 2, 0, 1)
        with sqlite3.connect(database) as db:
            assert db.execute("SELECT count(*) FROM study_events WHERE kind = ?", (BACKFILLED,)).fetchone()[0] == 0

        full_after_first = False
        ingestor.min_free_bytes = free_bytes  # the disk was freed; the operator runs the backfill again
        second = run_backfill(ingestor, factory, [study], **peer)  # type: ignore[arg-type]
    finally:
        server.shutdown()
    assert (second.skipped_known, second.stored, second.duplicates, second.retrieved_studies) == (0, 2, 1, 1)
    with sqlite3.connect(database) as db:
        assert db.execute("SELECT count(*) FROM instances").fetchone()[0] == len(CT)
        assert db.execute("SELECT count(*) FROM study_events WHERE kind = ?", (BACKFILLED,)).fetchone()[0] == 1
