"""outgoing results: documents built once, stored, sent by the dispatcher

Revision ID: 0003_inference_outgoing
Revises: 0002_inference
Create Date: 2026-11-30 07:40:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003_inference_outgoing'
down_revision = '0002_inference'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('outgoing_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('score_result_id', sa.Integer(), nullable=True),
    sa.Column('folder', sa.Text(), nullable=False),
    sa.Column('sop_instance_uids', sa.JSON(), nullable=False),
    sa.Column('destination', sa.JSON(), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['score_result_id'], ['score_results.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('outgoing_results', schema=None) as batch_op:
        batch_op.create_index('ix_outgoing_results_ready', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_outgoing_results_study_id'), ['study_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outgoing_results_score_result_id'), ['score_result_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_outgoing_results_state'), ['state'], unique=False)


def downgrade() -> None:
    op.drop_table('outgoing_results')
