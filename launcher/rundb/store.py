"""Row ⇄ RunRecord, and the inserts both dialects say differently (upsert, insert-if-absent)."""

from __future__ import annotations

from dataclasses import fields
from typing import Optional

from sqlalchemy import Connection


def row_values(record, registry_project: str) -> dict:
    """The `runs` row of a RunRecord: its fields (the state as its string value) and the listing project. Its
    ledger summary is not among them: a cache only `ledger_values` writes, so saving a record (a resume's fresh
    one among them) keeps what was read of the run's ledger."""
    values = {f.name: getattr(record, f.name) for f in fields(record) if f.name != "ledger"}
    values["state"] = str(getattr(values["state"], "value", values["state"]))
    values["handle"] = dict(values["handle"] or {})
    values["registry_project"] = registry_project
    return values


def ledger_values(summary) -> dict:
    """The `runs` columns of a `LedgerSummary`."""
    return {"goodput": summary.goodput, "device_hours": summary.device_hours, "device_unit": summary.device_unit,
            "ledger_read": summary.read}


def ledger_summary(row):
    """The `LedgerSummary` of a `runs` row, None where its ledger was never read."""
    from launcher.rundb.records import LedgerSummary

    if row["ledger_read"] is None:
        return None
    return LedgerSummary(goodput=row["goodput"], device_hours=row["device_hours"], device_unit=row["device_unit"],
                         read=row["ledger_read"])


def task_of_document(document: str) -> Optional[str]:
    """The `task` of a recipe a launch shipped (`LoadedRecipe.shipped`), or None where it names none or does not
    parse. Read without validating the recipe, with PyYAML's C loader where it has one: it fills in the task of
    every run recorded before the database kept it (migration 0002, the JSON import), thousands at once."""
    import yaml

    try:
        parsed = yaml.load(document, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (yaml.YAMLError, ValueError):
        return None
    task = parsed.get("task") if isinstance(parsed, dict) else None
    return task if isinstance(task, str) else None


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
