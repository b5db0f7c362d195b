"""quarantine: size, digest and repeat count of refused files (quotas, aggregation, retention)

Revision ID: 0003_security_quarantine
Revises: 0004_inference_triage_safety
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_security_quarantine"
down_revision = "0004_inference_triage_safety"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.add_column(sa.Column("size", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("digest", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("repeats", sa.Integer(), nullable=False, server_default="1"))
        batch_op.add_column(sa.Column("last_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_quarantine_digest"), ["digest"], unique=False)
    # Rows from before this revision named the JSON sidecar; the kept file sits beside it.
    op.execute("UPDATE quarantine SET path = substr(path, 1, length(path) - 5) || '.dcm' WHERE path LIKE '%.json'")


def downgrade() -> None:
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_quarantine_digest"))
        batch_op.drop_column("last_at")
        batch_op.drop_column("repeats")
        batch_op.drop_column("digest")
        batch_op.drop_column("size")
