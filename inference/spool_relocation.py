"""A home restored on another path: the instance and quarantine paths the database recorded follow the spool.

The database records each accepted instance and each kept refusal by its absolute path. A home copied as the
README's backup says (``cp -a var ...``) and started from another folder or machine kept every path of the old one:
the studies received before the move answered WADO-RS with 404 "no longer in the spool (retention)", could not be
scored or drift-checked, and the retention cleaner never removed their quarantined files (it removed the old paths,
found nothing, and forgot them). ``medscreen serve`` rewrites those paths at start, in one transaction, when the old
folder is gone or the files are found under the new one: paths of an old folder that still holds them are left.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Text, func, literal, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from inference.tables import Instance, QuarantinedItem
from service.db import session_scope

__all__ = ["Relocated", "relocate_recorded_paths"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Relocated:
    """Rows whose path now names ``new`` where it had named ``old``."""

    what: str
    old: str
    new: str
    rows: int


def relocate_recorded_paths(session_factory: sessionmaker[Session], studies: Path, quarantine: Path) -> list[Relocated]:
    """Point the recorded paths of instances (``studies/<study>/<series>/<sop>.dcm``) and of kept refusals
    (``quarantine/<day>/<file>``) at ``studies`` and ``quarantine`` where they name the same files elsewhere."""
    done: list[Relocated] = []
    with session_scope(session_factory) as session:
        done += _relocate(session, "instance", Instance.path, studies, depth=3)
        done += _relocate(session, "quarantined file", QuarantinedItem.path, quarantine, depth=2)
    for moved in (moved for moved in done if moved.rows):
        log.warning("home moved: %d %s paths recorded under %s now name %s", moved.rows, moved.what, moved.old, moved.new)
    return done


def _relocate(session: Session, what: str, column: InstrumentedAttribute[str] | InstrumentedAttribute[str | None],
              folder: Path, *, depth: int) -> list[Relocated]:
    here = f"{folder}/"
    left: list[str] = []  # old folders that still hold their files: not ours to take
    done: list[Relocated] = []
    while True:
        query = select(column).where(column.is_not(None), ~column.startswith(here, autoescape=True))
        for prefix in left:
            query = query.where(~column.startswith(prefix, autoescape=True))
        sample = session.scalar(query.limit(1))
        if sample is None:
            return done
        recorded = Path(sample)
        if not recorded.is_absolute() or len(recorded.parts) <= depth + 1:
            left.append(sample)
            continue
        old = recorded.parents[depth - 1]
        old_prefix = f"{old}/"
        new_file = folder / recorded.relative_to(old)
        if old.exists() and not new_file.exists():
            log.warning("%s paths recorded under %s, outside %s, are left as they are: that folder still exists",
                        what, old, folder)
            left.append(old_prefix)
            continue
        result = session.execute(
            update(column.class_)
            .where(column.startswith(old_prefix, autoescape=True))
            .values({column: literal(here, Text).concat(func.substr(column, len(old_prefix) + 1, type_=Text))})
            .execution_options(synchronize_session=False)
        )
        done.append(Relocated(what, str(old), str(folder), int(getattr(result, "rowcount", 0) or 0)))
