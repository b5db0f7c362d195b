"""series are keyed by (study, SeriesInstanceUID), not by the series UID alone

Revision ID: 0006_inference_series_per_study
Revises: 0005_inference_writeback_node
Create Date: 2026-12-02 05:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006_inference_series_per_study'
down_revision = '0005_inference_writeback_node'
branch_labels = None
depends_on = None

# SQLite reflects 0001's unnamed UNIQUE(series_instance_uid) without a name: batch mode names it by this.
_NAMING = {"uq": "uq_%(table_name)s_%(column_0_name)s"}


def _unique_name(columns: list[str]) -> str:
    """The name of the table's unique constraint on ``columns`` (PostgreSQL: series_series_instance_uid_key)."""
    for constraint in sa.inspect(op.get_bind()).get_unique_constraints('series'):
        if constraint['column_names'] == columns:
            return constraint['name'] or f"uq_series_{columns[0]}"
    raise RuntimeError(f"series has no unique constraint on {columns}")


def upgrade() -> None:
    # A SeriesInstanceUID reused by another study (colliding modality or anonymiser UIDs) filed that study's
    # instances under the first study's series; each study now has its own.
    old = _unique_name(['series_instance_uid'])
    with op.batch_alter_table('series', schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint(old, type_='unique')
        batch_op.create_unique_constraint('uq_series_study_series', ['study_id', 'series_instance_uid'])


def downgrade() -> None:
    with op.batch_alter_table('series', schema=None, naming_convention=_NAMING) as batch_op:
        batch_op.drop_constraint('uq_series_study_series', type_='unique')
        batch_op.create_unique_constraint('uq_series_series_instance_uid', ['series_instance_uid'])
