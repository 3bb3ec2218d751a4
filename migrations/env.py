"""Alembic environment for the state database.

`nr-archiver db upgrade` (and every run) passes an open connection in
`config.attributes["connection"]`; the plain `alembic` command uses the settings' database
(ARCHIVER_DB_URL).
"""

import sqlalchemy as sa
from alembic import context

from archiver.settings import load
from archiver.state.schema import metadata

target_metadata = metadata


def run_with(connection: sa.Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is not None:
    run_with(connection)
else:
    engine = sa.create_engine(load().db_url)
    with engine.begin() as conn:
        run_with(conn)
