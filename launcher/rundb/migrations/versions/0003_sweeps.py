"""Sweeps that a controller explores (a recipe's `search:`): what each sweep asked for, where its controller is,
and every decision it made about a cell, one row per cell and rung (the unique key makes a second decision for
the same rung fail in the database). Optuna's study of a sweep lives in its own tables beside these
(`launcher.sweeps.study`); this project's schema version moved to its own table so that Optuna's Alembic keeps
`alembic_version` (`launcher.rundb.engine.VERSION_TABLE`).

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("sweep_id", sa.String(255), primary_key=True),
        sa.Column("registry_project", sa.Text(), nullable=False, index=True),
        sa.Column("recipe", sa.Text(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("method", sa.String(16), nullable=False),
        sa.Column("request", Json, nullable=False),
        sa.Column("search", Json, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=True),
        sa.Column("controller", sa.Text(), nullable=True),
        sa.Column("heartbeat", sa.Float(), nullable=True),
        sa.Column("parent_run", sa.Text(), nullable=True),
    )
    op.create_table(
        "sweep_decisions",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("sweep_id", sa.String(255), sa.ForeignKey("sweeps.sweep_id", ondelete="CASCADE"), nullable=False,
                  index=True),
        sa.Column("cell", sa.String(255), nullable=False),
        sa.Column("run_id", sa.String(255), nullable=False),
        sa.Column("rung", sa.Integer(), nullable=False),
        sa.Column("budget", sa.Float(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(16), nullable=False),
        sa.Column("decided", sa.Float(), nullable=False),
        sa.Column("reported", sa.Float(), nullable=True),
        sa.Column("acted", sa.Float(), nullable=True),
        sa.UniqueConstraint("sweep_id", "cell", "rung", name="one_decision_per_rung"),
    )


def downgrade() -> None:
    op.drop_table("sweep_decisions")
    op.drop_table("sweeps")
