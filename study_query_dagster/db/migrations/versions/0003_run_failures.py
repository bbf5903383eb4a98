"""run_failures: Dagster runs that failed, recorded by the run-failure sensor

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from study_query_dagster.db.types import UTCDateTime

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "run_failures",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=False),
        sa.Column("job_name", sa.String(255), nullable=False),
        sa.Column("partition_key", sa.String(255), nullable=True),
        sa.Column("failed_steps", JSON, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("failed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_failures")),
        sa.UniqueConstraint("run_id", name=op.f("uq_run_failures_run_id")),
    )
    op.create_index(op.f("ix_run_failures_failed_at"), "run_failures", ["failed_at"])


def downgrade() -> None:
    op.drop_index(op.f("ix_run_failures_failed_at"), table_name="run_failures")
    op.drop_table("run_failures")
