"""variation_results: append-only answer-variation metrics (semantic entropy, agreement, drift)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from study_query_dagster.db.types import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

APPEND_ONLY_MESSAGE = "variation_results is append-only: {op} of stored results is not allowed"


def _append_only_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER variation_results_no_{action.lower()} BEFORE {action} "
                "ON variation_results BEGIN "
                f"SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE.format(op=action)}'); END"
            )
    elif dialect == "postgresql":
        message = APPEND_ONLY_MESSAGE.format(op="%")
        op.execute(
            "CREATE OR REPLACE FUNCTION variation_results_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}', TG_OP USING ERRCODE = 'restrict_violation'; END "
            "$$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER variation_results_no_update_delete BEFORE UPDATE OR DELETE "
            "ON variation_results FOR EACH ROW EXECUTE FUNCTION variation_results_append_only()"
        )
        op.execute(
            "CREATE TRIGGER variation_results_no_truncate BEFORE TRUNCATE ON variation_results "
            "FOR EACH STATEMENT EXECUTE FUNCTION variation_results_append_only()"
        )


def upgrade() -> None:
    op.create_table(
        "variation_results",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("run_group_id", ID, nullable=False),
        sa.Column("prompt_set", sa.String(64), nullable=False),
        sa.Column("prompt_id", sa.String(100), nullable=False),
        sa.Column("target", sa.String(100), nullable=False),
        sa.Column("other", sa.String(255), nullable=True),
        sa.Column("metric", sa.String(64), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_other", sa.Integer(), nullable=True),
        sa.Column("strategy", sa.String(32), nullable=False),
        sa.Column("strategy_key", sa.String(64), nullable=False),
        sa.Column("settings_json", JSON, nullable=True),
        sa.Column("method_version", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("n >= 1", name=op.f("ck_variation_results_n_positive")),
        sa.ForeignKeyConstraint(
            ["run_group_id"], ["groups.id"], name=op.f("fk_variation_results_run_group_id_groups")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_variation_results")),
    )
    op.create_index(
        "ix_variation_results_run_strategy_metric",
        "variation_results",
        ["run_group_id", "strategy_key", "metric"],
    )
    op.create_index(
        "ix_variation_results_prompt_set_metric", "variation_results", ["prompt_set", "metric"]
    )
    _append_only_triggers(op.get_bind().dialect.name)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS variation_results_no_update")
        op.execute("DROP TRIGGER IF EXISTS variation_results_no_delete")
    op.drop_index("ix_variation_results_prompt_set_metric", table_name="variation_results")
    op.drop_index("ix_variation_results_run_strategy_metric", table_name="variation_results")
    op.drop_table("variation_results")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS variation_results_append_only() CASCADE")
