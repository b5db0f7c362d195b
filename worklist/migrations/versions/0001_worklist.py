"""worklist entries, priority changes, live feed, final reads

Revision ID: 0001_worklist
Revises: (own branch; depends on 0002_inference for studies and score_results)
Create Date: 2026-11-22 04:14:22.934607
"""

import sqlalchemy as sa
from alembic import op

revision = "0001_worklist"
down_revision = None
branch_labels = ("worklist",)
depends_on = "0002_inference"


def upgrade() -> None:
    op.create_table(
        "worklist_cursors",
        sa.Column("name", sa.String(length=32), nullable=False),
        sa.Column("last_id", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "worklist_events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("worklist_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_worklist_events_at"), ["at"], unique=False)

    op.create_table(
        "final_reads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("revision", sa.Integer(), nullable=False),
        sa.Column("reader", sa.String(length=64), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text(), nullable=False),
        sa.Column("score_result_id", sa.Integer(), nullable=True),
        sa.Column("waited_s", sa.Float(), nullable=False),
        sa.Column("tier_at_read", sa.String(length=16), nullable=False),
        sa.ForeignKeyConstraint(
            ["score_result_id"],
            ["score_results.id"],
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("final_reads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_final_reads_read_at"), ["read_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_final_reads_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_final_reads_study_instance_uid"), ["study_instance_uid"], unique=False)

    op.create_table(
        "priority_changes",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("from_tier", sa.String(length=16), nullable=True),
        sa.Column("to_tier", sa.String(length=16), nullable=False),
        sa.Column("from_due_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("to_due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("score_result_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["score_result_id"],
            ["score_results.id"],
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("priority_changes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_priority_changes_at"), ["at"], unique=False)
        batch_op.create_index("ix_priority_changes_study", ["study_id", "id"], unique=False)

    op.create_table(
        "worklist_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("study_id", sa.Integer(), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=64), nullable=False),
        sa.Column("study_description", sa.String(length=256), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("site", sa.String(length=128), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=True),
        sa.Column("order_priority", sa.String(length=16), nullable=False),
        sa.Column("arrived_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("study_status", sa.String(length=32), nullable=False),
        sa.Column("tier", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tie_break", sa.Float(), nullable=False),
        sa.Column("priority_reason", sa.Text(), nullable=False),
        sa.Column("score_result_id", sa.Integer(), nullable=True),
        sa.Column("result_revision", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("call", sa.String(length=16), nullable=True),
        sa.Column("model_name", sa.String(length=64), nullable=True),
        sa.Column("model_version", sa.String(length=32), nullable=True),
        sa.Column("score_reason", sa.Text(), nullable=True),
        sa.Column("claimed_by", sa.String(length=64), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("is_open", sa.Boolean(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["score_result_id"],
            ["score_results.id"],
        ),
        sa.ForeignKeyConstraint(
            ["study_id"],
            ["studies.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("study_id"),
        sa.UniqueConstraint("study_instance_uid"),
    )
    with op.batch_alter_table("worklist_entries", schema=None) as batch_op:
        batch_op.create_index(
            "ix_worklist_modality_order", ["is_open", "modality", "due_at", "tie_break", "id"], unique=False
        )
        batch_op.create_index("ix_worklist_open_order", ["is_open", "due_at", "tie_break", "id"], unique=False)
        batch_op.create_index("ix_worklist_site_order", ["is_open", "site", "due_at", "tie_break", "id"], unique=False)
        batch_op.create_index(
            "ix_worklist_state_order", ["is_open", "state", "due_at", "tie_break", "id"], unique=False
        )
        batch_op.create_index("ix_worklist_tier_due", ["tier", "due_at"], unique=False)
        batch_op.create_index("ix_worklist_open", ["is_open"], unique=False)

    op.create_table(
        "final_read_findings",
        sa.Column("read_id", sa.Integer(), nullable=False),
        sa.Column("task", sa.String(length=32), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["read_id"],
            ["final_reads.id"],
        ),
        sa.PrimaryKeyConstraint("read_id", "task"),
    )


def downgrade() -> None:
    op.drop_table("final_read_findings")
    with op.batch_alter_table("worklist_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_worklist_open")
        batch_op.drop_index("ix_worklist_tier_due")
        batch_op.drop_index("ix_worklist_state_order")
        batch_op.drop_index("ix_worklist_site_order")
        batch_op.drop_index("ix_worklist_open_order")
        batch_op.drop_index("ix_worklist_modality_order")

    op.drop_table("worklist_entries")
    with op.batch_alter_table("priority_changes", schema=None) as batch_op:
        batch_op.drop_index("ix_priority_changes_study")
        batch_op.drop_index(batch_op.f("ix_priority_changes_at"))

    op.drop_table("priority_changes")
    with op.batch_alter_table("final_reads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_final_reads_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_final_reads_study_id"))
        batch_op.drop_index(batch_op.f("ix_final_reads_read_at"))

    op.drop_table("final_reads")
    with op.batch_alter_table("worklist_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_worklist_events_at"))

    op.drop_table("worklist_events")
    op.drop_table("worklist_cursors")
