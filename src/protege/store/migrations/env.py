"""Alembic environment for protege's store (configured in code by protege.store.migrate, no alembic.ini).

Runs online only: on the connection protege hands over (already inside its locked transaction), or on an engine
made from `sqlalchemy.url` when a developer autogenerates a revision.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection

from protege.store.migrate import include_object, target_metadata


def run_on(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata(),
        include_object=include_object,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_server_default=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = context.config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = context.config.get_main_option("sqlalchemy.url")
    if url is None:
        raise SystemExit("protege's migrations need a connection or a sqlalchemy.url: see protege.store.migrate")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            run_on(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("protege's migrations run online only: open the store with protege.store.Store(url)")
run_online()
