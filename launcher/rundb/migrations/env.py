"""Alembic environment: migrations run on the connection `launcher.rundb.engine.upgrade` passes in (inside its
locked transaction); offline mode is not used."""

from alembic import context

from launcher.rundb.engine import VERSION_TABLE
from launcher.rundb.models import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata, transactional_ddl=True,
                  version_table=VERSION_TABLE)
with context.begin_transaction():
    context.run_migrations()
