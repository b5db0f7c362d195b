"""screening: the owner of a result whose record names no practitioner or organisation (part of the child's identity)

Revision ID: 3e8a6c1f0b57
Revises: 5c1e9b7d2f40
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "3e8a6c1f0b57"
down_revision = "5c1e9b7d2f40"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("screening_results") as batch:
        batch.add_column(sa.Column("owner", sa.String(64), nullable=False, server_default=""))
    # A stored result that named no care team was its submitter's child (their scope held it); a batch run's
    # ("batch:<file>") was no clinician's.
    op.execute(
        "UPDATE screening_results SET owner = submitted_by "
        "WHERE practitioner = '' AND organization = '' AND submitted_by NOT LIKE 'batch:%'"
    )


def downgrade() -> None:
    with op.batch_alter_table("screening_results") as batch:
        batch.drop_column("owner")
