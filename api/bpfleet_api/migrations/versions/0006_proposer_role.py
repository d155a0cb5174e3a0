"""the proposer role: reads, validates and simulates policies, never writes

Revision ID: 0006
Revises: 0005

SQLite stores the role as text (no constraint): nothing to change there. PostgreSQL
has an enum type, which gains a value; going back removes proposer tokens (and their
browser sessions) and rebuilds the type without it.
"""

from __future__ import annotations

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

OLD_ROLES = ("ADMIN", "CI", "VIEWER", "BOOTSTRAP", "AGENT")


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TYPE role ADD VALUE IF NOT EXISTS 'PROPOSER'")


def downgrade() -> None:
    op.execute(
        "DELETE FROM token WHERE session_of IN (SELECT id FROM token WHERE role = 'PROPOSER')"
    )
    op.execute("DELETE FROM token WHERE role = 'PROPOSER'")
    if op.get_bind().dialect.name == "postgresql":
        values = ", ".join(f"'{role}'" for role in OLD_ROLES)
        op.execute("ALTER TYPE role RENAME TO role_with_proposer")
        op.execute(f"CREATE TYPE role AS ENUM ({values})")
        op.execute("ALTER TABLE token ALTER COLUMN role TYPE role USING role::text::role")
        op.execute("DROP TYPE role_with_proposer")
