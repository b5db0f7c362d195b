"""outbox: a message's topic, so that an older state is never offered again after a newer one

Revision ID: 0003_outbox_topic
Revises: 0002_security_service
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_outbox_topic"
down_revision = "0002_security_service"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Messages stored before have no topic: each stands alone, as before (they cannot be told apart here
    # without reading another package's tables).
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("topic", sa.String(length=128), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox_messages", schema=None) as batch_op:
        batch_op.drop_column("topic")
