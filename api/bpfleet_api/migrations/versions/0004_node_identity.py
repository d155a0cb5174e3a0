"""node identity and the topology's sources: node keys, tombstones, agent and admin
labels apart, pod CIDRs, workloads and namespaces set by an admin; configured tokens

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodetombstone",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "nodeworkloads",
        sa.Column("node", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("workloads", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("node"),
    )
    op.create_table(
        "namespace",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.add_column(sa.Column("agent_labels", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("admin_labels", sa.JSON(), nullable=True))
        batch_op.add_column(
            sa.Column("key_digest", sqlmodel.sql.sqltypes.AutoString(), nullable=True)
        )
        batch_op.add_column(sa.Column("pod_cidrs", sa.JSON(), nullable=True))
    # Labels so far came from registration, or from the operator over them: call them the
    # agent's, so the operator's next sync sets its own on top.
    op.execute("UPDATE node SET agent_labels = labels, admin_labels = '{}'")
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.alter_column("agent_labels", existing_type=sa.JSON(), nullable=False)
        batch_op.alter_column("admin_labels", existing_type=sa.JSON(), nullable=False)

    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.add_column(sa.Column("configured", sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE token SET configured = (name = 'admin' AND role = 'ADMIN' "
        "OR name = 'bootstrap' AND role = 'BOOTSTRAP') "
        "AND node IS NULL AND session_of IS NULL"
    )
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.alter_column("configured", existing_type=sa.Boolean(), nullable=False)

    # Namespace labels now come from an admin only; what agents declared is dropped.
    with op.batch_alter_table("nodeendpoints", schema=None) as batch_op:
        batch_op.drop_column("namespaces")


def downgrade() -> None:
    with op.batch_alter_table("nodeendpoints", schema=None) as batch_op:
        batch_op.add_column(sa.Column("namespaces", sa.JSON(), nullable=True))
    op.execute("UPDATE nodeendpoints SET namespaces = '{}'")
    with op.batch_alter_table("nodeendpoints", schema=None) as batch_op:
        batch_op.alter_column("namespaces", existing_type=sa.JSON(), nullable=False)
    with op.batch_alter_table("token", schema=None) as batch_op:
        batch_op.drop_column("configured")
    with op.batch_alter_table("node", schema=None) as batch_op:
        batch_op.drop_column("pod_cidrs")
        batch_op.drop_column("key_digest")
        batch_op.drop_column("admin_labels")
        batch_op.drop_column("agent_labels")
    op.drop_table("namespace")
    op.drop_table("nodeworkloads")
    op.drop_table("nodetombstone")
