"""outgoing results name the node whose spool holds their files; results keep their SR's series UID

Revision ID: 0005_inference_writeback_node
Revises: 0004_inference_triage_safety
Create Date: 2026-11-30 10:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0005_inference_writeback_node'
down_revision = '0004_inference_triage_safety'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows keep no node: they are in the ingest node's spool, and the nodes reading it send them.
    with op.batch_alter_table('outgoing_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('node', sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f('ix_outgoing_results_node'), ['node'], unique=False)
    # So that a re-score on another node names the previous SR as its predecessor without reading its file.
    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('sr_series_instance_uid', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.drop_column('sr_series_instance_uid')
    with op.batch_alter_table('outgoing_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_outgoing_results_node'))
        batch_op.drop_column('node')
