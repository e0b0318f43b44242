"""The run registry: runs, their live attempts, the projects whose JSON registries were imported.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

Json = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("run_id", sa.String(255), primary_key=True),
        sa.Column("registry_project", sa.Text(), nullable=False),
        sa.Column("recipe", sa.Text(), nullable=False),
        sa.Column("target", sa.String(64), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("started", sa.Float(), nullable=False),
        sa.Column("store", sa.Text(), nullable=False),
        sa.Column("local_dir", sa.Text(), nullable=False),
        sa.Column("tracking_uri", sa.Text(), nullable=False),
        sa.Column("handle", Json, nullable=False),
        sa.Column("restarts", sa.Integer(), nullable=False),
        sa.Column("ended", sa.Float(), nullable=True),
        sa.Column("log", sa.Text(), nullable=True),
        sa.Column("project", sa.Text(), nullable=False),
        sa.Column("recipe_document", sa.Text(), nullable=False),
        sa.Column("sweep_id", sa.String(255), nullable=True),
        sa.Column("cell", sa.Text(), nullable=True),
    )
    op.create_index("ix_runs_registry_project", "runs", ["registry_project"])
    op.create_index("ix_runs_started", "runs", ["started"])
    op.create_index("ix_runs_sweep_id", "runs", ["sweep_id"])
    op.create_table(
        "live_attempts",
        sa.Column("run_id", sa.String(255), primary_key=True),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("claimed", sa.Float(), nullable=False),
        sa.Column("launcher", sa.Text(), nullable=True),
    )
    op.create_table(
        "json_imports",
        sa.Column("project", sa.Text(), primary_key=True),
        sa.Column("imported", sa.Float(), nullable=False),
        sa.Column("runs", sa.Integer(), nullable=False),
        sa.Column("skipped", Json, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("json_imports")
    op.drop_table("live_attempts")
    op.drop_index("ix_runs_sweep_id", "runs")
    op.drop_index("ix_runs_started", "runs")
    op.drop_index("ix_runs_registry_project", "runs")
    op.drop_table("runs")
