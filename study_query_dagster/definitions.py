"""The code location: one `defs`, loaded by workspace.yaml; its resources come from `Settings`."""

import dagster as dg

from .assets.analysis import ANALYSIS_ASSETS, ANALYSIS_CHECKS
from .assets.analytics import (
    prompt_search_job,
    provider_comparison,
    recent_calls,
    study_summary,
    usage_time_series,
)
from .assets.embeddings import (
    embedding_dimensions_consistent,
    every_response_embedded,
    response_embeddings,
)
from .assets.inference import (
    every_request_captured,
    failure_rate,
    inference_run,
    raw_calls_are_immutable,
)
from .assets.migration import MIGRATION_CHECKS, legacy_inference_runs, migrated_raw_calls
from .assets.prompts import prompt_set
from .assets.results import study_results
from .assets.variation import VARIATION_ASSETS, VARIATION_CHECKS
from .automation import (
    analytics_after_migration,
    analytics_automation,
    daily_prompt_sets,
    hourly_prompt_sets,
    legacy_database_sensor,
    prompt_set_sensor,
    record_failed_runs,
    variation_automation,
)
from .config import get_settings
from .jobs import (
    adhoc_prompt_job,
    analytics_job,
    migration_job,
    results_job,
    study_job,
    variation_job,
)
from .resources import build_resources

defs = dg.Definitions(
    assets=[
        prompt_set,
        inference_run,
        response_embeddings,
        study_results,
        provider_comparison,
        usage_time_series,
        study_summary,
        recent_calls,
        legacy_inference_runs,
        migrated_raw_calls,
        *VARIATION_ASSETS,
        *ANALYSIS_ASSETS,
    ],
    asset_checks=[
        *MIGRATION_CHECKS,
        every_request_captured,
        failure_rate,
        raw_calls_are_immutable,
        every_response_embedded,
        embedding_dimensions_consistent,
        *VARIATION_CHECKS,
        *ANALYSIS_CHECKS,
    ],
    jobs=[
        study_job,
        variation_job,
        results_job,
        adhoc_prompt_job,
        migration_job,
        analytics_job,
        prompt_search_job,
    ],
    sensors=[
        prompt_set_sensor,
        legacy_database_sensor,
        record_failed_runs,
        analytics_automation,
        variation_automation,
        analytics_after_migration,
    ],
    schedules=[daily_prompt_sets, hourly_prompt_sets],
    resources=build_resources(get_settings()),
)
