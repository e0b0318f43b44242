"""The one-time import of a project's JSON registry (`runs/registry/*.json`, the registry before the database).

Once per project and database: a row in `json_imports` marks it done, written in the same transaction as the
runs, so two processes opening the database at once import it once. A run already in the database is kept as it
is; a file that is not a run record is reported (like `Registry.skipped`) and left out. The JSON files stay where
they are."""

from __future__ import annotations

import json
import time
from pathlib import Path

from sqlalchemy import Engine, select

from launcher.rundb import engine as db
from launcher.rundb.models import JsonImport, RunRow
from launcher.rundb.store import insert_ignoring_existing, row_values, task_of_document

REGISTRY_DIR = "runs/registry"


def pending(project_dir: Path) -> bool:
    """Whether the project has a JSON registry at all (cheap: no database is touched)."""
    directory = project_dir / REGISTRY_DIR
    return directory.is_dir() and any(directory.glob("*.json"))


def import_once(engine: Engine, project_dir: Path, project_key: str) -> list[str]:
    """Import the project's JSON records unless that was done before; returns the lines for files skipped now."""
    from launcher.rundb.records import record_from_fields

    with db.transaction(engine) as connection:
        if connection.execute(select(JsonImport.project).where(JsonImport.project == project_key)).first():
            return []
    records, skipped = [], []
    for path in sorted((project_dir / REGISTRY_DIR).glob("*.json")):
        try:
            record = record_from_fields(json.loads(path.read_text()))
            record.task = record.task or task_of_document(record.recipe_document)  # as migration 0002 does
            records.append(record)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            skipped.append(f"{path.relative_to(project_dir)}: not a run record ({type(exc).__name__}): skipped")
    with db.transaction(engine, write=True) as connection:
        marked = connection.execute(insert_ignoring_existing(connection, JsonImport, [{
            "project": project_key, "imported": time.time(), "runs": len(records), "skipped": skipped}]))
        if marked.rowcount == 0:  # another process imported it meanwhile
            return []
        if records:
            connection.execute(insert_ignoring_existing(connection, RunRow, [
                row_values(record, project_key) for record in records]))
    return skipped


