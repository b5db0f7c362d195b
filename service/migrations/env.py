"""Alembic environment: runs every package's branch against the configured URL, in one transaction.

On SQLite too: alembic treats SQLite DDL as non-transactional and the sqlite3 module commits before each
CREATE/ALTER, so a first start stopped half-way (SIGTERM, kill -9, power) left tables without the revision that
made them, and every later start failed on "table ... already exists". SQLite's DDL is transactional once the
sqlite3 module leaves transaction control to SQLAlchemy; BEGIN IMMEDIATE (on PostgreSQL an advisory lock) also makes a
second process that starts at the same moment wait, then find the schema current.
"""

from typing import Any

from alembic import context
from sqlalchemy import create_engine, event

from service.db import Base

# Any fixed key: medscreen's migrations serialise on it (PostgreSQL advisory locks are per database).
_MIGRATION_LOCK = 7263_0001

url = context.config.get_main_option("sqlalchemy.url") or ""
sqlite = url.startswith("sqlite")
# hide_parameters: a migration that copies rows (a batch ALTER on SQLite) must not log them when it fails.
engine = (create_engine(url, connect_args={"timeout": 30}, hide_parameters=True) if sqlite
          else create_engine(url, hide_parameters=True))
if sqlite:

    def _leave_transactions_to_sqlalchemy(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None

    event.listen(engine, "connect", _leave_transactions_to_sqlalchemy)
    event.listen(engine, "begin", lambda connection: connection.exec_driver_sql("BEGIN IMMEDIATE"))
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=sqlite,
                      transactional_ddl=True)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # Two nodes started at once on an empty database had both run the first revision, and one failed on
            # alembic_version's unique key; the second now waits here and then finds the schema current.
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})")
        context.run_migrations()
    connection.commit()
engine.dispose()
