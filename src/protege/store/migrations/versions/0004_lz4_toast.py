"""PostgreSQL compresses the large columns of traces and runs with lz4 instead of pglz, where the server has it.

A trace (~4 KB of JSON: the input, the transcript, the output) is past PostgreSQL's 2 KB TOAST threshold, so every
insert compresses it; with pglz that was most of the server's work in a bulk ingest (6.3k traces/s by COPY, 10.7k
with lz4, BENCHMARKS §2). Metadata only: rows already stored keep their compression, new ones get lz4. SQLite:
nothing to do.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

LARGE_COLUMNS = {
    "trace": ("input", "messages", "tools", "output", "output_text", "errors", "field_confidences", "raw"),
    "run": ("input", "output"),
}


def upgrade() -> None:
    _set_compression("lz4")


def downgrade() -> None:
    _set_compression("pglz")


def _set_compression(method: str) -> None:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql" or not _has_lz4(bind):
        return  # SQLite, PostgreSQL < 14 (no per-column compression) or a server built without lz4
    for table, columns in LARGE_COLUMNS.items():
        changes = ", ".join(f"ALTER COLUMN {column} SET COMPRESSION {method}" for column in columns)
        op.execute(f"ALTER TABLE {table} {changes}")


def _has_lz4(bind: sa.Connection) -> bool:
    found = bind.execute(
        sa.text("SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)")
    )
    return found.first() is not None
