"""Alembic's environment for the warehouse: always run by ``tfp.warehouse`` on a connection it opened
(and, on PostgreSQL, locked), never from an alembic.ini."""

from alembic import context

from tfp.warehouse import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
