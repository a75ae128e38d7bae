"""Alembic environment for the feedback database.

Run programmatically by ``db.engine.migrate`` (which passes an open connection in
``config.attributes["connection"]``); for hand use, ``alembic -x url=sqlite:///... upgrade head``
with ``-c`` pointing at a config whose ``script_location`` is this folder also works.
"""

from __future__ import annotations

from alembic import context

from db.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
        compare_type=True,
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from db.engine import make_engine, resolve_url

    url = context.get_x_argument(as_dictionary=True).get("url")
    engine = make_engine(resolve_url(url)[0])
    with engine.begin() as conn:
        _configure(conn)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported; run `python -m db upgrade`.")
run_migrations_online()
