"""The run database: the registry's tables (SQLAlchemy 2), their Alembic migrations, the engine for a URL
(SQLite by default, PostgreSQL for a team through `SPOTTRAIN_DB`) and the one-time import of the JSON registry.

Imported only by a command that needs the registry: `launch --help` and the render commands never load
SQLAlchemy.
"""
