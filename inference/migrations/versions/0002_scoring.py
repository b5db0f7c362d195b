"""scoring queue, results, order priority

Revision ID: 0002_inference
Revises: 0001_inference
Create Date: 2026-11-22 04:08:49.752628
"""

import sqlalchemy as sa
from alembic import op

revision = '0002_inference'
down_revision = '0001_inference'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('scoring_jobs',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('model_name', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('lease_owner', sa.String(length=64), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('study_id', 'revision', 'model_name', 'model_version', name='uq_scoring_job_key')
    )
    with op.batch_alter_table('scoring_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_scoring_jobs_ready', ['state', 'next_attempt_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_scoring_jobs_state'), ['state'], unique=False)
        batch_op.create_index(batch_op.f('ix_scoring_jobs_study_id'), ['study_id'], unique=False)

    op.create_table('score_results',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('study_id', sa.Integer(), nullable=False),
    sa.Column('job_id', sa.Integer(), nullable=False),
    sa.Column('revision', sa.Integer(), nullable=False),
    sa.Column('task', sa.String(length=32), nullable=False),
    sa.Column('model_name', sa.String(length=64), nullable=False),
    sa.Column('model_version', sa.String(length=32), nullable=False),
    sa.Column('mlflow_run_id', sa.String(length=64), nullable=True),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('score', sa.Float(), nullable=True),
    sa.Column('threshold', sa.Float(), nullable=True),
    sa.Column('call', sa.String(length=16), nullable=True),
    sa.Column('localisation', sa.JSON(), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('timings', sa.JSON(), nullable=False),
    sa.Column('writeback_state', sa.String(length=16), nullable=False),
    sa.Column('sr_sop_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('heatmap_sop_instance_uid', sa.String(length=64), nullable=True),
    sa.Column('supersedes_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['job_id'], ['scoring_jobs.id'], ),
    sa.ForeignKeyConstraint(['study_id'], ['studies.id'], ),
    sa.ForeignKeyConstraint(['supersedes_id'], ['score_results.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('job_id')
    )
    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_score_results_created_at'), ['created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_results_model_version'), ['model_version'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_results_study_id'), ['study_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_score_results_task'), ['task'], unique=False)

    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('order_priority', sa.String(length=16), nullable=False, server_default=''))



def downgrade() -> None:
    with op.batch_alter_table('studies', schema=None) as batch_op:
        batch_op.drop_column('order_priority')

    with op.batch_alter_table('score_results', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_score_results_task'))
        batch_op.drop_index(batch_op.f('ix_score_results_study_id'))
        batch_op.drop_index(batch_op.f('ix_score_results_model_version'))
        batch_op.drop_index(batch_op.f('ix_score_results_created_at'))

    op.drop_table('score_results')
    with op.batch_alter_table('scoring_jobs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scoring_jobs_study_id'))
        batch_op.drop_index(batch_op.f('ix_scoring_jobs_state'))
        batch_op.drop_index('ix_scoring_jobs_ready')

    op.drop_table('scoring_jobs')
