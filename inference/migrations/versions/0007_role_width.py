"""a result's and a job's role holds previous-champion (17 characters; the columns held 16)

Revision ID: 0007_inference_role_width
Revises: 0006_inference_series_per_study
Create Date: 2026-12-02 14:30:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007_inference_role_width'
down_revision = '0006_inference_series_per_study'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # PostgreSQL enforces the length: a result stored as previous-champion (a rollback's, or a job that ran on after
    # its study moved on) failed there and its job was retried to the dead letter. SQLite never enforced it.
    for table in ('scoring_jobs', 'score_results'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('role', existing_type=sa.String(length=16), type_=sa.String(length=32),
                                  existing_nullable=False)


def downgrade() -> None:
    for table in ('scoring_jobs', 'score_results'):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column('role', existing_type=sa.String(length=32), type_=sa.String(length=16),
                                  existing_nullable=False)
