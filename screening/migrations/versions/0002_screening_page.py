"""screening: patient name, record number and care team on results; clinician assignments

Revision ID: 5c1e9b7d2f40
Revises: a7c3e1d90b42
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "5c1e9b7d2f40"
down_revision = "a7c3e1d90b42"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screening_results") as batch:
        batch.add_column(sa.Column("patient_name", sa.String(200), nullable=False, server_default=""))
        batch.add_column(sa.Column("mrn", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("practitioner", sa.String(128), nullable=False, server_default=""))
        batch.add_column(sa.Column("organization", sa.String(128), nullable=False, server_default=""))
    op.create_index("ix_screening_results_practitioner", "screening_results", ["practitioner"])
    op.create_index("ix_screening_results_organization", "screening_results", ["organization"])
    op.create_table(
        "screening_assignments",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("practitioner", sa.String(128), nullable=False),
        sa.Column("organization", sa.String(128), nullable=False),
        sa.Column("assigned_by", sa.String(64), nullable=False),
        sa.Column("assigned_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("username", "practitioner", "organization", name="uq_screening_assignment"),
    )
    op.create_index("ix_screening_assignments_username", "screening_assignments", ["username"])


def downgrade() -> None:
    op.drop_table("screening_assignments")
    op.drop_index("ix_screening_results_organization", "screening_results")
    op.drop_index("ix_screening_results_practitioner", "screening_results")
    with op.batch_alter_table("screening_results") as batch:
        for column in ("organization", "practitioner", "mrn", "patient_name"):
            batch.drop_column(column)
