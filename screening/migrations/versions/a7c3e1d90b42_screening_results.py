"""screening results and paediatricians' outcomes

Revision ID: a7c3e1d90b42
Revises:
Create Date: 2026-11-22
"""

import sqlalchemy as sa
from alembic import op

revision = "a7c3e1d90b42"
down_revision = None
branch_labels = ("screening",)
depends_on = None


def upgrade() -> None:
    op.create_table(
        "screening_results",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("patient_id", sa.String(128), nullable=False),
        sa.Column("patient_digest", sa.String(16), nullable=False),
        sa.Column("screened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("age_days", sa.Integer, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("risk", sa.Float, nullable=True),
        sa.Column("threshold", sa.Float, nullable=True),
        sa.Column("flagged", sa.Boolean, nullable=False),
        sa.Column("explanation", sa.JSON, nullable=False),
        sa.Column("risk_assessment", sa.JSON, nullable=False),
        sa.Column("flag", sa.JSON, nullable=True),
        sa.Column("submitted_by", sa.String(64), nullable=False),
    )
    op.create_index("ix_screening_results_patient_id", "screening_results", ["patient_id"])
    op.create_index("ix_screening_results_flagged", "screening_results", ["flagged", "screened_at"])
    op.create_table(
        "screening_outcomes",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column(
            "result_id", sa.Integer, sa.ForeignKey("screening_results.id", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("decided_by", sa.String(64), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("outcome IN ('referred', 'not_relevant')", name="ck_screening_outcome"),
    )
    op.create_index("ix_screening_outcomes_result_id", "screening_outcomes", ["result_id"])


def downgrade() -> None:
    op.drop_table("screening_outcomes")
    op.drop_table("screening_results")
