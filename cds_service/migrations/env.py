"""Alembic environment: runs against the engine the service hands over, or the configured URL."""

from alembic import context
from sqlalchemy import create_engine

from cds_service.storage.tables import metadata

config = context.config
engine = config.attributes.get("connection_engine") or create_engine(
    config.get_main_option("sqlalchemy.url")
)

with engine.begin() as connection:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        context.run_migrations()
