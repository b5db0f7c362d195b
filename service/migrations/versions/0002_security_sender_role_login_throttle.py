"""the sender role (STOW-RS only) and login throttling per account and per address

Revision ID: 0002_security_service
Revises: 0002_integration_outbox
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

revision = "0002_security_service"
down_revision = "0002_integration_outbox"
branch_labels = None
depends_on = None

# Frozen here on purpose, as in the first revision: a later role comes with a later migration.
ROLES_BEFORE = ("radiologist", "paediatrician", "ml-engineer", "quality", "admin")
ROLES = ("radiologist", "paediatrician", "ml-engineer", "quality", "sender", "admin")


def _check(roles: tuple[str, ...]) -> str:
    return f"role IN ({', '.join(repr(r) for r in roles)})"


def upgrade() -> None:
    with op.batch_alter_table("user_roles", schema=None) as batch_op:
        batch_op.drop_constraint("ck_user_roles_role", type_="check")
        batch_op.create_check_constraint("ck_user_roles_role", _check(ROLES))
    op.create_table(
        "login_throttle",
        sa.Column("key", sa.String(160), primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("first_failure_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("login_throttle")
    op.execute("DELETE FROM user_roles WHERE role = 'sender'")
    with op.batch_alter_table("user_roles", schema=None) as batch_op:
        batch_op.drop_constraint("ck_user_roles_role", type_="check")
        batch_op.create_check_constraint("ck_user_roles_role", _check(ROLES_BEFORE))
