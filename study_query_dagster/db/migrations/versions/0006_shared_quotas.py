"""quota_scopes, quota_windows, quota_leases: provider quotas shared across processes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "quota_scopes",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("rpm_level", sa.Float(), nullable=True),
        sa.Column("rpm_at", sa.Float(), nullable=True),
        sa.Column("tpm_level", sa.Float(), nullable=True),
        sa.Column("tpm_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("scope", name=op.f("pk_quota_scopes")),
    )
    op.create_table(
        "quota_windows",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("requests_limit", sa.Float(), nullable=True),
        sa.Column("requests_remaining", sa.Float(), nullable=True),
        sa.Column("requests_ends_at", sa.Float(), nullable=True),
        sa.Column("tokens_limit", sa.Float(), nullable=True),
        sa.Column("tokens_remaining", sa.Float(), nullable=True),
        sa.Column("tokens_ends_at", sa.Float(), nullable=True),
        sa.Column("paused_until", sa.Float(), nullable=True),
        sa.Column("pauses", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "model", name=op.f("pk_quota_windows")),
    )
    op.create_table(
        "quota_leases",
        sa.Column("scope", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(64), nullable=False),
        sa.Column("model", sa.String(255), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.Column("tokens", sa.Float(), nullable=False),
        sa.Column("waiting", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "holder", "model", name=op.f("pk_quota_leases")),
    )
    op.create_index("ix_quota_leases_scope_expires_at", "quota_leases", ["scope", "expires_at"])


def downgrade() -> None:
    op.drop_index("ix_quota_leases_scope_expires_at", table_name="quota_leases")
    op.drop_table("quota_leases")
    op.drop_table("quota_windows")
    op.drop_table("quota_scopes")
