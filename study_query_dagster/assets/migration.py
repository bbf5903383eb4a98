"""The v1 -> v2 migration (group `migration`): the legacy database as an external asset, the
migrated rows (with a quarantine for rows that cannot be migrated), and the backfill
validation as asset checks with readable reports, sampled or complete as the run config says."""

import dagster as dg
from pydantic import Field

from ..resources.database import DatabaseResource, LegacyDatabaseResource
from ..services.migration import (
    CHECKS,
    ValidationReport,
    legacy_label,
    legacy_stats,
    migrate_v1_to_v2,
)
from ..services.migration import validate_migration as run_checks

QUARANTINE_ROWS_SHOWN = 50


class MigrationConfig(dg.Config):
    """How `migrated_raw_calls` runs (the launchpad's config for the asset)."""

    skip_invalid_rows: bool = Field(
        default=False,
        description="Skip v1 rows that cannot be migrated (empty or over-long provider, negative "
        "latency, bad timestamp or metadata, ...) and record them in the quarantine (v1 id and "
        "reason) instead of failing. Quarantined rows are retried by every later run.",
    )
    source_id: str | None = Field(
        default=None,
        description="Name this v1 database's rows in the ledger explicitly (1-64 characters), "
        "e.g. to keep a diverged copy apart. Default: recognised by content.",
    )


class VerificationConfig(dg.Config):
    """How much the backfill checks compare (the launchpad's config for `migration_checks`)."""

    full: bool = Field(
        default=False,
        description="Compare every migrated row with its v1 row (streamed, page by page) "
        "instead of a sample.",
    )
    sample_size: int = Field(
        default=200, ge=0, description="Rows compared one by one when `full` is false."
    )
    seed: int | None = Field(
        default=None, description="Seed of the sample (reported, so a sample can be redrawn)."
    )
    source_id: str | None = Field(
        default=None,
        description="The ledger source to check. Default: the one the latest migration of "
        "this legacy database reported.",
    )


def observation_metadata(stats: dict) -> dict:
    newest = stats["max_created_at"]
    return {
        "row_count": stats["row_count"],
        "max_id": stats["max_id"] if stats["max_id"] is not None else -1,
        "newest_created_at": newest.isoformat() if newest else "",
    }


@dg.observable_source_asset(
    group_name="migration",
    description="The legacy v1 `inference_runs` table at LEGACY_DATABASE_URL (read only).",
)
def legacy_inference_runs(legacy_database: LegacyDatabaseResource) -> dg.ObserveResult:
    stats = legacy_stats(legacy_database.source_url())
    return dg.ObserveResult(
        metadata=observation_metadata(stats),
        data_version=dg.DataVersion(f"{stats['row_count']}:{stats['max_id']}"),
    )


def _quarantine_table(rows: list[dict], total: int) -> str:
    lines = ["| v1_id | field | reason |", "| --- | --- | --- |"]
    for row in rows[:QUARANTINE_ROWS_SHOWN]:
        reason = str(row["reason"]).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {row['v1_id']} | {row['field']} | {reason} |")
    if total > QUARANTINE_ROWS_SHOWN:
        lines.append(f"\n… {total - QUARANTINE_ROWS_SHOWN} more")
    return "\n".join(lines) if rows else "No v1 row is in quarantine."


@dg.asset(
    group_name="migration",
    deps=[legacy_inference_runs],
    kinds={"sqlite", "postgres"},
)
def migrated_raw_calls(
    context: dg.AssetExecutionContext,
    config: MigrationConfig,
    database: DatabaseResource,
    legacy_database: LegacyDatabaseResource,
) -> dg.MaterializeResult:
    """Copies every v1 row not yet migrated into raw_calls, streamed in chunks; each v1
    batch_id becomes a `batch` group. Idempotent and incremental through the migration ledger:
    a re-run imports only new rows (and retries quarantined ones)."""
    with database.failures("the migration", resume="rows already migrated are not copied again"):
        result = migrate_v1_to_v2(
            legacy_database.source_url(),
            database.get_connection(),
            source_id=config.source_id,
            skip_invalid_rows=config.skip_invalid_rows,
            on_chunk=lambda r: context.log.info(f"migrated {r.migrated} rows so far"),
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": result.already_migrated + result.migrated,
            "migrated_now": result.migrated,
            "already_migrated": result.already_migrated,
            "v1_rows": result.v1_rows,
            "batch_memberships_added": result.batch_memberships,
            "chunks": result.chunks,
            "rows_per_second": round(result.rows_per_second, 1),
            "source_id": result.source_id or "",
            "legacy_database": legacy_label(legacy_database.source_url()),
            "quarantined": result.in_quarantine,
            "quarantined_now": result.quarantined,
            "released_from_quarantine": result.released,
            "quarantine": dg.MetadataValue.md(
                _quarantine_table(result.quarantine, result.in_quarantine)
            ),
        }
    )


BLOCKING = {
    "row_counts_match",
    "batch_sizes_match",
    "batch_order_matches",
    "timestamps_match",
    "sample_parity",
}
CHECK_DESCRIPTIONS = {
    "row_counts_match": "Every v1 row became exactly one raw_call or is in quarantine (ledger and "
    "tagged rows agree); names the v1 ids missing or duplicated. Blocking: data was lost.",
    "batch_sizes_match": "Each v1 batch_id has a `batch` group with as many migrated members as "
    "v1 rows; names the v1 ids missing from or foreign to a group.",
    "batch_order_matches": "Each batch group lists its members in v1 order (created_at, then v1 "
    "id), position by position; names the first position that differs.",
    "timestamps_match": "created_at min/max per batch agree, and sampled (or all) rows agree "
    "exactly.",
    "sample_parity": "Sampled (or all) rows agree on every migrated field: prompt, response, "
    "provider, model, tokens, latency, ids, metadata.",
    "no_rows_quarantined": "Warns while v1 rows sit in the quarantine (listed with their reason): "
    "fix them in the v1 database and re-run the migration.",
}
CHECK_SPECS = [
    dg.AssetCheckSpec(
        name,
        asset=migrated_raw_calls,
        blocking=name in BLOCKING,
        description=CHECK_DESCRIPTIONS[name],
    )
    for name in CHECKS
]


def _check_result(report: ValidationReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        check_name=report.check,
        passed=report.passed,
        severity=dg.AssetCheckSeverity.ERROR
        if report.check in BLOCKING
        else dg.AssetCheckSeverity.WARN,
        description=report.summary,
        metadata={
            "report": dg.MetadataValue.md(report.to_markdown()),
            "mismatches": report.mismatch_count,
            **{k: v for k, v in report.counts.items() if isinstance(v, int | float | str)},
        },
    )


def _last_source_id(instance: dg.DagsterInstance, legacy_url: str) -> str | None:
    """The source id the latest migration of this legacy database reported."""
    event = instance.get_latest_materialization_event(migrated_raw_calls.key)
    metadata = event.asset_materialization.metadata if event and event.asset_materialization else {}
    if "legacy_database" not in metadata or metadata["legacy_database"].value != legacy_url:
        return None
    return metadata["source_id"].value or None


@dg.multi_asset_check(
    specs=CHECK_SPECS,
    can_subset=True,
    description="The backfill validation of migrated_raw_calls: v1 and v2 compared.",
)
def migration_checks(
    context: dg.AssetCheckExecutionContext,
    config: VerificationConfig,
    database: DatabaseResource,
    legacy_database: LegacyDatabaseResource,
):
    selected = [key.name for key in context.selected_asset_check_keys]
    source_id = config.source_id or _last_source_id(
        context.instance, legacy_label(legacy_database.source_url())
    )
    reports = run_checks(
        legacy_database.source_url(),
        database.get_connection(),
        source_id=source_id,
        sample_size=None if config.full else config.sample_size,
        seed=config.seed,
        checks=selected,
    )
    for report in reports:
        yield _check_result(report)
