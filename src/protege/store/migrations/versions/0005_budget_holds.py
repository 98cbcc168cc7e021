"""Teacher budget reservations become rows of their own (owner, lease), beside each day's settled spend.

A reservation used to live only in the day's total: a process killed mid-call left it counted against the cap for
the rest of the day, with nobody able to release it. Now `budget.reserved_usd` sums the `budget_hold` rows of the
calls in flight, and the next reservation releases the holds of a process that is gone (or whose lease ran out).
Spend already in `spent_usd` stays there: it cannot be told apart from what was settled.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_hold",
        sa.Column("id", AutoString(), nullable=False),
        sa.Column("task_name", AutoString(), nullable=False),
        sa.Column("day", AutoString(), nullable=False),
        sa.Column("amount_usd", sa.Float(), nullable=False),
        sa.Column("owner", AutoString(), nullable=False),
        sa.Column("expires_at", UTCDateTime(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", "task_name"),
    )
    # a plain ADD COLUMN on both databases; the default fills the rows there are, and those an older protege adds
    op.add_column("budget", sa.Column("reserved_usd", sa.Float(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("budget") as batch:
        batch.drop_column("reserved_usd")
    op.drop_table("budget_hold")
