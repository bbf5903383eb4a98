"""migration_quarantine (v1 rows the migration skipped, and why); migration_ledger append-only

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from study_query_dagster.db.types import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
APPEND_ONLY_MESSAGE = "migration_ledger is append-only: {op} of ledger entries is not allowed"


def _ledger_triggers(dialect: str) -> None:
    # A deleted or repointed ledger entry would make the next run copy that v1 row again.
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER migration_ledger_no_{action.lower()} BEFORE {action} ON "
                f"migration_ledger BEGIN SELECT RAISE(ABORT, "
                f"'{APPEND_ONLY_MESSAGE.format(op=action)}'); END"
            )
    elif dialect == "postgresql":
        message = APPEND_ONLY_MESSAGE.format(op="%")
        op.execute(
            "CREATE OR REPLACE FUNCTION migration_ledger_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}', TG_OP USING ERRCODE = 'restrict_violation'; END "
            "$$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER migration_ledger_no_update_delete BEFORE UPDATE OR DELETE ON "
            "migration_ledger FOR EACH ROW EXECUTE FUNCTION migration_ledger_append_only()"
        )
        op.execute(
            "CREATE TRIGGER migration_ledger_no_truncate BEFORE TRUNCATE ON migration_ledger "
            "FOR EACH STATEMENT EXECUTE FUNCTION migration_ledger_append_only()"
        )


def upgrade() -> None:
    op.create_table(
        "migration_quarantine",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("v1_id", sa.BigInteger(), nullable=False),
        sa.Column("field", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("quarantined_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_migration_quarantine")),
        sa.UniqueConstraint("source", "v1_id", name=op.f("uq_migration_quarantine_source_v1_id")),
    )
    _ledger_triggers(op.get_bind().dialect.name)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS migration_ledger_no_update")
        op.execute("DROP TRIGGER IF EXISTS migration_ledger_no_delete")
    elif dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS migration_ledger_append_only() CASCADE")
    op.drop_table("migration_quarantine")
