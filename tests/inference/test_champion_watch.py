"""``medscreen serve``'s champion check (``inference.champions.ChampionWatch``): registration of the shipped models
retried until the registry answers, then each task's champion checked for ``/healthz``."""

from __future__ import annotations

import threading
from pathlib import Path

from inference.champions import ChampionWatch, ModelSelector
from service.lifecycle import ModelRole
from service.model_registry import alias_version, clear_alias, set_alias
from tests.peers import wait_for


def test_registration_is_retried_until_it_succeeds_then_a_task_without_champion_is_named(
    registry: str, tmp_path: Path
) -> None:
    """Registration had run once, before the receivers started: a tracking server not up yet kept the DICOM port
    closed for minutes, and on a first start no model was ever registered (every study stayed `routed`, /healthz
    ok). Here the first two attempts find the registry down."""
    attempts: list[int] = []

    def register() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise ConnectionError("tracking server not up yet")

    selector = ModelSelector(registry, tmp_path / "model-cache", intra_op_threads=1, refresh_s=0)
    watch = ChampionWatch(selector, register=register, interval_s=0.2, retry_first_s=0.05, retry_max_s=0.1)
    assert set(watch.problems()) == {"ct-chest", "mammography", "chest-xray"}  # nothing checked yet
    stop = threading.Event()
    thread = threading.Thread(target=watch.run_until, args=(stop,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: not watch.problems(), 60, "every task's champion loaded")
        assert len(attempts) == 3
        champion = alias_version(registry, "mammography", ModelRole.champion)
        assert champion is not None
        clear_alias(registry, "mammography", ModelRole.champion)
        wait_for(lambda: "mammography" in watch.problems(), 30, "the task without champion named")
        assert watch.problems() == {"mammography": "no champion registered for mammography"}
        set_alias(registry, "mammography", ModelRole.champion, champion.version)
        wait_for(lambda: not watch.problems(), 30, "the champion back")
    finally:
        stop.set()
        thread.join(timeout=10)
