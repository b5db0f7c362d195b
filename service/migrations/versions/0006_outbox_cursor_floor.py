"""outbox: where a producer's cursor started, below which its look-back never reads

Revision ID: 0006_outbox_cursor_floor
Revises: 0005_outbox_lease
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006_outbox_cursor_floor"
down_revision = "0005_outbox_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A cursor made before has already sent what lay behind it: floor 0 changes nothing for it.
    with op.batch_alter_table("outbox_cursors", schema=None) as batch_op:
        batch_op.add_column(sa.Column("floor", sa.BigInteger(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("outbox_cursors", schema=None) as batch_op:
        batch_op.drop_column("floor")
