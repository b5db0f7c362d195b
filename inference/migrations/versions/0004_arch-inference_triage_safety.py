"""triage safety: steering right of each result, instances received but not scored (derived / ignored)

Revision ID: 0004_inference_triage_safety
Revises: 0003_security_quarantine
Create Date: 2026-11-30 08:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0004_inference_triage_safety'
down_revision = '0003_security_quarantine'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.add_column(sa.Column('steering', sa.String(length=16), server_default='raise-only', nullable=False))
        batch_op.create_index(batch_op.f('ix_score_results_sr_sop_instance_uid'), ['sr_sop_instance_uid'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_results_heatmap_sop_instance_uid'), ['heatmap_sop_instance_uid'], unique=False)
    op.create_table('not_scored_instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('sop_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('study_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('series_instance_uid', sa.String(length=64), nullable=False),
    sa.Column('modality', sa.String(length=16), nullable=False),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('times_received', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sop_instance_uid')
    )
    with op.batch_alter_table('not_scored_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_not_scored_instances_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_not_scored_instances_study_instance_uid'), ['study_instance_uid'], unique=False)


def downgrade() -> None:
    op.drop_table('not_scored_instances')
    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_results_heatmap_sop_instance_uid'))
        batch_op.drop_index(batch_op.f('ix_score_results_sr_sop_instance_uid'))
        batch_op.drop_column('steering')
