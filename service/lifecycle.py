"""The lifecycle named once: tasks, study statuses, job states, model roles and worklist event kinds.

Every package compares against these enums instead of free strings (as pynetdicom names its events and
statuses). They are ``StrEnum``s, so a member equals its stored string and the database columns keep
their plain values: ``StudyStatus.routed == "routed"``.
"""

from __future__ import annotations

import enum

__all__ = ["Task", "StudyStatus", "JobState", "ModelRole", "WritebackState", "SteeringRight", "WorklistState", "WorklistEventKind", "TASKS"]


class Task(enum.StrEnum):
    """An imaging task; also the name of its registered model in the MLflow registry."""

    ct_chest = "ct-chest"
    mammography = "mammography"
    chest_xray = "chest-xray"


TASKS: tuple[str, ...] = tuple(task.value for task in Task)


class StudyStatus(enum.StrEnum):
    """Where a study stands; `failed` means its champion job ran out of retries (dead letter)."""

    receiving = "receiving"
    complete = "complete"
    routed = "routed"
    not_applicable = "not_applicable"
    scoring = "scoring"
    scored = "scored"
    could_not_score = "could_not_score"
    out_of_scope = "out_of_scope"  # outside the model version's intended use: not scored, keeps arrival order
    failed = "failed"


class JobState(enum.StrEnum):
    queued = "queued"
    running = "running"
    retry = "retry"
    done = "done"
    dead = "dead"


class ModelRole(enum.StrEnum):
    """A registered model version's alias in the MLflow registry."""

    champion = "champion"
    challenger = "challenger"
    previous_champion = "previous-champion"


class SteeringRight(enum.StrEnum):
    """How far a model version may move a study in the worklist; kept with the version in the registry.

    `defer` must be earned by validation on data from another source than the training data.
    """

    defer = "defer"  # positives move up; negatives may be deferred up to the aging cap
    raise_only = "raise-only"  # positives move up; negatives never lose their place
    shadow = "shadow"  # recorded and shown, never moves anything


class WritebackState(enum.StrEnum):
    """Where a champion result stands with the PACS: built and stored once, then sent by the dispatcher."""

    pending = "pending"
    sent = "sent"
    failed = "failed"  # the dispatcher ran out of attempts (dead letter); the stored files are kept
    disabled = "disabled"  # no PACS configured, a challenger, or nothing to send


class WorklistEventKind(enum.StrEnum):
    added = "added"
    priority = "priority"
    claimed = "claimed"
    released = "released"
    read = "read"


class WorklistState(enum.StrEnum):
    """What a worklist entry shows about scoring: the study's outcome, or ``awaiting_score`` until it has one."""

    awaiting_score = "awaiting_score"
    not_applicable = "not_applicable"
    scored = "scored"
    could_not_score = "could_not_score"
    out_of_scope = "out_of_scope"
    failed = "failed"
    read = "read"  # closed by a final read; only a filter on the list, never stored as an entry's state
