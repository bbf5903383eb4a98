"""The v1 -> v2 migration (group `migration`): the legacy database as an external asset, the
migrated rows, and the backfill validation as asset checks with readable reports."""

import dagster as dg

from ..resources.database import DatabaseResource, LegacyDatabaseResource
from ..services.migration import (
    ValidationReport,
    batch_sizes_match,
    legacy_stats,
    migrate_v1_to_v2,
    row_counts_match,
    sample_parity,
    timestamps_match,
)

SAMPLE_SIZE = 200  # rows compared one by one by timestamps_match and sample_parity


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


@dg.asset(
    group_name="migration",
    deps=[legacy_inference_runs],
    kinds={"sqlite", "postgres"},
)
def migrated_raw_calls(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    legacy_database: LegacyDatabaseResource,
) -> dg.MaterializeResult:
    """Copies every v1 row not yet migrated into raw_calls, streamed in chunks; each v1
    batch_id becomes a `batch` group. Idempotent and incremental through the migration ledger:
    a re-run imports only new rows."""
    with database.failures("the migration", resume="rows already migrated are not copied again"):
        result = migrate_v1_to_v2(
            legacy_database.source_url(),
            database.get_connection(),
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
        }
    )


def _check_result(report: ValidationReport) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=report.passed,
        description=report.summary,
        metadata={
            "report": dg.MetadataValue.md(report.to_markdown()),
            "mismatches": report.mismatch_count,
            **{k: v for k, v in report.counts.items() if isinstance(v, int | float | str)},
        },
    )


def _sources(database: DatabaseResource, legacy_database: LegacyDatabaseResource):
    return legacy_database.source_url(), database.get_connection()


@dg.asset_check(asset=migrated_raw_calls, name="row_counts_match", blocking=True)
def row_counts_match_check(
    database: DatabaseResource, legacy_database: LegacyDatabaseResource
) -> dg.AssetCheckResult:
    """Every v1 row became exactly one raw_call (ledger and tagged rows agree); names the v1
    ids that are missing or duplicated. A mismatch means data was lost: blocking."""
    return _check_result(row_counts_match(*_sources(database, legacy_database)))


@dg.asset_check(asset=migrated_raw_calls, name="batch_sizes_match", blocking=True)
def batch_sizes_match_check(
    database: DatabaseResource, legacy_database: LegacyDatabaseResource
) -> dg.AssetCheckResult:
    """Each v1 batch_id has a `batch` group with as many migrated members as v1 rows; where
    the sizes differ, the report names the v1 ids missing from or foreign to the group."""
    return _check_result(batch_sizes_match(*_sources(database, legacy_database)))


@dg.asset_check(asset=migrated_raw_calls, name="timestamps_match", blocking=True)
def timestamps_match_check(
    database: DatabaseResource, legacy_database: LegacyDatabaseResource
) -> dg.AssetCheckResult:
    """created_at min/max per batch agree, and sampled rows agree exactly."""
    return _check_result(
        timestamps_match(*_sources(database, legacy_database), sample_size=SAMPLE_SIZE)
    )


@dg.asset_check(asset=migrated_raw_calls, name="sample_parity", blocking=True)
def sample_parity_check(
    database: DatabaseResource, legacy_database: LegacyDatabaseResource
) -> dg.AssetCheckResult:
    """Sampled rows agree on prompt, response, provider, tokens, latency and metadata."""
    return _check_result(
        sample_parity(*_sources(database, legacy_database), sample_size=SAMPLE_SIZE)
    )


MIGRATION_CHECKS = [
    row_counts_match_check,
    batch_sizes_match_check,
    timestamps_match_check,
    sample_parity_check,
]
