"""worklist entries carry the champion version's steering right

Revision ID: 0002_worklist_steering
Revises: 0001_worklist
Create Date: 2026-11-30 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_worklist_steering'
down_revision = '0001_worklist'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('worklist_entries', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steering', sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('worklist_entries', schema=None) as batch_op:
        batch_op.drop_column('steering')
