"""outbox: the ids below a cursor's floor not yet committed when it started, read as new when they commit

Revision ID: 0007_outbox_cursor_unseen
Revises: 0006_outbox_cursor_floor
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0007_outbox_cursor_unseen"
down_revision = "0006_outbox_cursor_floor"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A cursor made before has none noted: it reads as it did.
    with op.batch_alter_table("outbox_cursors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("unseen", sa.Text(), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("outbox_cursors", schema=None) as batch_op:
        batch_op.drop_column("unseen")
