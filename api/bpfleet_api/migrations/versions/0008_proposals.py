"""proposals: changes asked for through the API that the operator writes to Git, the
operators' work queue, and policy drafts shared by link

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TEXT = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "proposal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("source_namespace", _TEXT(), nullable=False),
        sa.Column("source_name", _TEXT(), nullable=False),
        sa.Column("author", _TEXT(), nullable=False),
        sa.Column("message", _TEXT(), nullable=False),
        sa.Column("files", sa.JSON(), nullable=False),
        sa.Column("objects", sa.JSON(), nullable=False),
        sa.Column("requested_branch", _TEXT(), nullable=True),
        sa.Column("state", _TEXT(), nullable=False),
        sa.Column("state_message", _TEXT(), nullable=False),
        sa.Column("branch", _TEXT(), nullable=True),
        sa.Column("commit", _TEXT(), nullable=True),
        sa.Column("parent", _TEXT(), nullable=True),
        sa.Column("pull_request", sa.JSON(), nullable=True),
        sa.Column("merged_commit", _TEXT(), nullable=True),
        sa.Column("revision", _TEXT(), nullable=True),
        sa.Column("errors", sa.JSON(), nullable=False),
        sa.Column("conflicts", sa.JSON(), nullable=False),
        sa.Column("merge_requested_by", _TEXT(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("pushed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merged_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("applied_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rejected_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("merge_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.create_index("ix_proposal_source", ["source_namespace", "source_name"])
        batch_op.create_index(batch_op.f("ix_proposal_state"), ["state"], unique=False)
    op.create_table(
        "proposaltask",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("proposal_id", sa.Integer(), nullable=False),
        sa.Column("action", _TEXT(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["proposal_id"], ["proposal.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("proposaltask", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_proposaltask_proposal_id"), ["proposal_id"], unique=False
        )
    op.create_table(
        "draft",
        sa.Column("id", _TEXT(), nullable=False),
        sa.Column("author", _TEXT(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("draft", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_draft_author"), ["author"], unique=False)
        batch_op.create_index(batch_op.f("ix_draft_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("draft", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_draft_created_at"))
        batch_op.drop_index(batch_op.f("ix_draft_author"))
    op.drop_table("draft")
    with op.batch_alter_table("proposaltask", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proposaltask_proposal_id"))
    op.drop_table("proposaltask")
    with op.batch_alter_table("proposal", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_proposal_state"))
        batch_op.drop_index("ix_proposal_source")
    op.drop_table("proposal")
