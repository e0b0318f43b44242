"""Row ⇄ RunRecord, and the inserts both dialects say differently (upsert, insert-if-absent)."""

from __future__ import annotations

from dataclasses import fields

from sqlalchemy import Connection


def row_values(record, registry_project: str) -> dict:
    """The `runs` row of a RunRecord: its fields (the state as its string value) and the listing project."""
    values = {f.name: getattr(record, f.name) for f in fields(record)}
    values["state"] = str(getattr(values["state"], "value", values["state"]))
    values["handle"] = dict(values["handle"] or {})
    values["registry_project"] = registry_project
    return values


def _insert(connection: Connection, table):
    if connection.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert(table)


def upsert(connection: Connection, table, values: dict, key: str):
    statement = _insert(connection, table).values(values)
    return statement.on_conflict_do_update(index_elements=[key],
                                           set_={name: statement.excluded[name] for name in values if name != key})


def insert_ignoring_existing(connection: Connection, table, rows: list[dict]):
    return _insert(connection, table).values(rows).on_conflict_do_nothing()
