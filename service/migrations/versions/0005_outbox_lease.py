"""outbox: a lease per channel, so that of several nodes on one database one sends a channel at a time

Revision ID: 0005_outbox_lease
Revises: 0004_audit_no_replace
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0005_outbox_lease"
down_revision = "0004_audit_no_replace"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outbox_leases",
        sa.Column("channel", sa.String(length=16), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("channel"),
    )


def downgrade() -> None:
    op.drop_table("outbox_leases")
