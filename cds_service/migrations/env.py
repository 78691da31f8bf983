"""Alembic environment: runs on the connection the service hands over (inside its migration
lock, see ``Database.migrate``), or on an engine for the configured URL."""

from alembic import context
from sqlalchemy import create_engine

from cds_service.storage.tables import metadata

config = context.config
connection = config.attributes.get("connection")

if connection is not None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
else:
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as own_connection:
        context.configure(connection=own_connection, target_metadata=metadata)
        with context.begin_transaction():
            context.run_migrations()
