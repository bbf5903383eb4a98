"""migration ledger (v1 inference_runs id -> raw_calls id, per legacy source); analytics index

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from study_query_dagster.db.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "migration_ledger",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("v1_id", sa.BigInteger(), nullable=False),
        sa.Column("raw_call_id", ID, nullable=False),
        sa.Column("migrated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["raw_call_id"],
            ["raw_calls.id"],
            name=op.f("fk_migration_ledger_raw_call_id_raw_calls"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_ledger")),
        sa.UniqueConstraint("raw_call_id", name=op.f("uq_migration_ledger_raw_call_id")),
        sa.UniqueConstraint("source", "v1_id", name=op.f("uq_migration_ledger_source_v1_id")),
    )

    # Per-model counts and latency percentiles read from the index alone (StudyService).
    op.create_index(
        "ix_raw_calls_status_modality_model_latency",
        "raw_calls",
        ["status", "modality", "provider", "model", "latency_ms"],
    )


def downgrade() -> None:
    op.drop_index("ix_raw_calls_status_modality_model_latency", table_name="raw_calls")
    op.drop_table("migration_ledger")
