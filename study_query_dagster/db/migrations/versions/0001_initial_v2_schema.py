"""initial v2 schema: raw_calls (append-only), call_artifacts, embedding_vectors, groups

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from study_query_dagster.db.types import UTCDateTime, Vector

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")

APPEND_ONLY_MESSAGE = "raw_calls is append-only: {op} of captured calls is not allowed"


def _append_only_triggers(dialect: str) -> None:
    if dialect == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER raw_calls_no_{action.lower()} BEFORE {action} ON raw_calls "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE.format(op=action)}'); END"
            )
    elif dialect == "postgresql":
        message = APPEND_ONLY_MESSAGE.format(op="%")
        op.execute(
            "CREATE OR REPLACE FUNCTION raw_calls_append_only() RETURNS trigger AS $$ "
            f"BEGIN RAISE EXCEPTION '{message}', TG_OP USING ERRCODE = 'restrict_violation'; END "
            "$$ LANGUAGE plpgsql"
        )
        op.execute(
            "CREATE TRIGGER raw_calls_no_update_delete BEFORE UPDATE OR DELETE ON raw_calls "
            "FOR EACH ROW EXECUTE FUNCTION raw_calls_append_only()"
        )
        op.execute(
            "CREATE TRIGGER raw_calls_no_truncate BEFORE TRUNCATE ON raw_calls "
            "FOR EACH STATEMENT EXECUTE FUNCTION raw_calls_append_only()"
        )


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS vector")

    op.create_table(
        "raw_calls",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("provider", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=True),
        sa.Column("modality", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("request_json", JSON, nullable=False),
        sa.Column("response_json", JSON, nullable=True),
        sa.Column("error_json", JSON, nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("tokens_json", JSON, nullable=True),
        sa.Column("metadata_json", JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint(
            "status IN ('success', 'failed', 'timeout', 'cancelled')",
            name=op.f("ck_raw_calls_status_valid"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_calls")),
    )
    op.create_index(op.f("ix_raw_calls_created_at"), "raw_calls", ["created_at"])
    op.create_index(op.f("ix_raw_calls_model"), "raw_calls", ["model"])
    op.create_index("ix_raw_calls_provider_status", "raw_calls", ["provider", "status"])
    op.create_index(op.f("ix_raw_calls_request_hash"), "raw_calls", ["request_hash"])
    _append_only_triggers(dialect)

    op.create_table(
        "groups",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("group_type", sa.String(64), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("metadata_json", JSON, nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_groups")),
        sa.UniqueConstraint("group_type", "name", name=op.f("uq_groups_group_type_name")),
    )

    op.create_table(
        "call_artifacts",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("call_id", ID, nullable=False),
        sa.Column("artifact_type", sa.String(64), nullable=False),
        sa.Column("uri", sa.Text(), nullable=False),
        sa.Column("content_type", sa.String(255), nullable=True),
        sa.Column("byte_size", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(64), nullable=True),
        sa.Column("metadata_json", JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["call_id"], ["raw_calls.id"], name=op.f("fk_call_artifacts_call_id_raw_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_call_artifacts")),
    )
    op.create_index(op.f("ix_call_artifacts_call_id"), "call_artifacts", ["call_id"])

    # The stored vector must have exactly `dimension` components, checked by the database.
    vector_length_check = (
        "vector_dims(vector) = dimension"
        if dialect == "postgresql"
        else "length(vector) = 4 * dimension"
    )
    op.create_table(
        "embedding_vectors",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("call_id", ID, nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("dimension", sa.Integer(), nullable=False),
        sa.Column("norm", sa.Float(), nullable=True),
        sa.Column("vector", Vector(), nullable=False),
        sa.Column("request_hash", sa.String(64), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column("metadata_json", JSON, nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.CheckConstraint("dimension > 0", name=op.f("ck_embedding_vectors_dimension_positive")),
        sa.CheckConstraint(
            vector_length_check, name=op.f("ck_embedding_vectors_vector_matches_dimension")
        ),
        sa.ForeignKeyConstraint(
            ["call_id"], ["raw_calls.id"], name=op.f("fk_embedding_vectors_call_id_raw_calls")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_embedding_vectors")),
        sa.UniqueConstraint("request_hash", name=op.f("uq_embedding_vectors_request_hash")),
    )
    op.create_index(op.f("ix_embedding_vectors_call_id"), "embedding_vectors", ["call_id"])
    op.create_index(op.f("ix_embedding_vectors_model"), "embedding_vectors", ["model"])

    op.create_table(
        "group_members",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("group_id", ID, nullable=False),
        sa.Column("call_id", ID, nullable=False),
        sa.Column("added_at", UTCDateTime(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("role", sa.String(64), nullable=True),
        sa.ForeignKeyConstraint(
            ["call_id"], ["raw_calls.id"], name=op.f("fk_group_members_call_id_raw_calls")
        ),
        sa.ForeignKeyConstraint(
            ["group_id"],
            ["groups.id"],
            name=op.f("fk_group_members_group_id_groups"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_group_members")),
        sa.UniqueConstraint("group_id", "call_id", name=op.f("uq_group_members_group_id_call_id")),
    )
    op.create_index(op.f("ix_group_members_call_id"), "group_members", ["call_id"])
    op.create_index(op.f("ix_group_members_group_id"), "group_members", ["group_id"])


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.drop_table("group_members")
    op.drop_table("embedding_vectors")
    op.drop_table("call_artifacts")
    op.drop_table("groups")
    if dialect == "sqlite":
        op.execute("DROP TRIGGER IF EXISTS raw_calls_no_update")
        op.execute("DROP TRIGGER IF EXISTS raw_calls_no_delete")
    op.drop_table("raw_calls")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS raw_calls_append_only() CASCADE")
