"""browser sessions: tokens that expire, and sessions opened with a token

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("session_of", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index(batch_op.f("ix_token_session_of"), ["session_of"], unique=False)
        batch_op.create_foreign_key("fk_token_session_of", "token", ["session_of"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_constraint("fk_token_session_of", type_="foreignkey")
        batch_op.drop_index(batch_op.f("ix_token_session_of"))
        batch_op.drop_column("expires_at")
        batch_op.drop_column("session_of")
