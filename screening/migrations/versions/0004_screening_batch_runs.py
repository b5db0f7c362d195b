"""screening: per batch run, the children screened and flagged (quality's flag rate)

Revision ID: 8b2d5f9e4a61
Revises: 3e8a6c1f0b57
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "8b2d5f9e4a61"
down_revision = "3e8a6c1f0b57"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_batch_runs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("actor", sa.String(64), nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("ran_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("screened", sa.Integer, nullable=False),
        sa.Column("flagged", sa.Integer, nullable=False),
    )
    op.create_index("ix_screening_batch_runs_model_version", "screening_batch_runs", ["model_version"])


def downgrade() -> None:
    op.drop_table("screening_batch_runs")
