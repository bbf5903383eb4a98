"""The code location: one `defs`, loaded by workspace.yaml; its resources come from `Settings`."""

import dagster as dg

from . import assets
from .assets.analytics import prompt_search_job
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
    # Every asset and check at module scope in assets/: a new asset module needs no edit here.
    assets=dg.load_assets_from_package_module(assets),
    asset_checks=dg.load_asset_checks_from_package_module(assets),
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
