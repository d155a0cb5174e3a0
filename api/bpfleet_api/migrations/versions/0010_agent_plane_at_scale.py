"""the agent plane at scale: assignments without a copy of the spec, status rows that
know when their report was made, rollouts with one task chain, a step start and the
nodes given up on at the progress deadline

Revision ID: 0010
Revises: 0009

An assignment's spec is its generation's (``programrevision``): the per-node copy goes.
Going back copies it in again from the revision.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.drop_column("spec")
    with op.batch_alter_table("nodeprogramstatus", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reported_at", sa.DateTime(timezone=True), nullable=True))
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skipped_nodes", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("step_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("chain", sa.Integer(), nullable=True))
    op.execute("UPDATE rollout SET skipped_nodes = '[]', chain = 0")
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.alter_column("skipped_nodes", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column("chain", existing_type=sa.Integer(), nullable=False)


def downgrade() -> None:
    with op.batch_alter_table("rollout", schema=None) as batch_op:
        batch_op.drop_column("chain")
        batch_op.drop_column("step_started_at")
        batch_op.drop_column("skipped_nodes")
    with op.batch_alter_table("nodeprogramstatus", schema=None) as batch_op:
        batch_op.drop_column("reported_at")
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.add_column(sa.Column("spec", sa.JSON(), nullable=True))
    op.execute(
        "UPDATE assignment SET spec = (SELECT spec FROM programrevision "
        "WHERE programrevision.program = assignment.program "
        "AND programrevision.generation = assignment.generation)"
    )
    op.execute("UPDATE assignment SET spec = '{}' WHERE spec IS NULL")
    with op.batch_alter_table("assignment", schema=None) as batch_op:
        batch_op.alter_column("spec", existing_type=sa.JSON(), nullable=False)
