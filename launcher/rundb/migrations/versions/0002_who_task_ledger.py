"""Who launched each run and its recipe's task (the Runs page's columns and filters), and the run's ledger summary
as last read (goodput and device-hours in the run list without reading every run's store on every refresh).

`task` is filled in for the runs already there from the recipe each one shipped; a run without one, or whose
document does not parse, keeps NULL. `launched_by` of those runs is unknown (NULL).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

from launcher.rundb.store import task_of_document

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

BATCH = 500  # documents read at a time while filling in `task`


def _columns() -> list[sa.Column]:
    """New each time: a Column belongs to the one table it is added to."""
    return [sa.Column("launched_by", sa.Text(), nullable=True), sa.Column("task", sa.Text(), nullable=True),
            sa.Column("goodput", sa.Float(), nullable=True), sa.Column("device_hours", sa.Float(), nullable=True),
            sa.Column("device_unit", sa.String(8), nullable=True), sa.Column("ledger_read", sa.Float(), nullable=True)]


def upgrade() -> None:
    for column in _columns():
        op.add_column("runs", column)
    _fill_in_tasks()


def _fill_in_tasks() -> None:
    runs = sa.table("runs", sa.column("run_id", sa.String), sa.column("recipe_document", sa.Text),
                    sa.column("task", sa.String))
    connection, last = op.get_bind(), ""
    while True:
        rows = connection.execute(sa.select(runs.c.run_id, runs.c.recipe_document)
                                  .where(runs.c.run_id > last, runs.c.recipe_document != "")
                                  .order_by(runs.c.run_id).limit(BATCH)).all()
        for run_id, document in rows:
            task = task_of_document(document)
            if task is not None:
                connection.execute(runs.update().where(runs.c.run_id == run_id).values(task=task))
        if len(rows) < BATCH:
            return
        last = rows[-1].run_id


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:  # SQLite drops a column by copying the table
        for column in reversed(_columns()):
            batch.drop_column(column.name)
