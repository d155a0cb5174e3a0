"""dashboard: GitSources as their operators report them, and reconcile requests

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gitsource",
        sa.Column("namespace", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=True),
        sa.Column("status", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reconcile_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("namespace", "name"),
    )
    op.create_table(
        "reconcilerequest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("reconcilerequest", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_reconcilerequest_requested_at"), ["requested_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("reconcilerequest", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reconcilerequest_requested_at"))
    op.drop_table("reconcilerequest")
    op.drop_table("gitsource")
