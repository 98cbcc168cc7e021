"""Traces keep each field's confidence (its least-sure token's probability): the figure a student's gate went by.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN on both databases: no copy of the trace table, however big
    op.add_column("trace", sa.Column("field_confidences", sa.JSON(none_as_null=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trace") as batch:
        batch.drop_column("field_confidences")
