"""audit: SQLite refuses REPLACE over an audit row (append-only, as UPDATE and DELETE already are)

Revision ID: 0004_audit_no_replace
Revises: 0003_outbox_topic
Create Date: 2026-12-02
"""

from alembic import op

revision = "0004_audit_no_replace"
down_revision = "0003_outbox_topic"
branch_labels = None
depends_on = None

# As in the first revision: frozen here, not imported.
_APPEND_ONLY_MESSAGE = "audit_events is append-only"


def upgrade() -> None:
    # SQLite's REPLACE (INSERT OR REPLACE) deletes the conflicting row without firing DELETE triggers (unless
    # recursive_triggers is on, which a console does not set), so it rewrote an audit row past them. A BEFORE
    # INSERT trigger runs before the conflict is resolved. PostgreSQL has no REPLACE; ON CONFLICT DO UPDATE
    # fires its UPDATE trigger, which refuses.
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            "CREATE TRIGGER audit_events_no_replace BEFORE INSERT ON audit_events "
            "WHEN EXISTS (SELECT 1 FROM audit_events WHERE id = NEW.id) "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MESSAGE}: REPLACE refused'); END"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS audit_events_no_replace")
