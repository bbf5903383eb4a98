"""Command-line helpers behind the Makefile: `python -m study_query_dagster.cli init|materialize`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import get_settings
from .db import DatabaseConnection
from .log import configure_logging, get_logger

logger = get_logger(__name__)

# The local instance: SQLite storage under DAGSTER_HOME, our loggers shown in the UI.
LOCAL_DAGSTER_YAML = """\
# Written by `make run` because none existed: a local Dagster instance on SQLite.
# deploy/dagster.yaml is the PostgreSQL variant for production.
telemetry:
  enabled: false
nux:
  enabled: false
python_logs:
  managed_python_loggers:
    - study_query_dagster
  python_log_level: INFO
concurrency:
  pools:
    default_limit: 4
run_monitoring:
  enabled: true
  # A run that dies without releasing its llm_api pool slot gets it freed after this long.
  free_slots_after_run_end_seconds: 30
"""


def ensure_dagster_home(home: Path) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(LOCAL_DAGSTER_YAML)
        logger.info("wrote %s", config)
    return config


def cmd_init(_args) -> int:
    settings = get_settings()
    if settings.dagster_home:
        ensure_dagster_home(settings.dagster_home)
    db = DatabaseConnection(settings.database_url)
    db.init_db()
    db.dispose()
    print(f"app database ready: {db.safe_url}")
    return 0


def cmd_materialize(_args) -> int:
    """Register every prompt set and materialize the whole graph for each, headless, on the
    instance in DAGSTER_HOME. Non-zero if a file is invalid, a run fails or an ERROR check fails."""
    import dagster as dg

    from .definitions import defs
    from .services.prompt_sets import discover_prompt_sets

    cmd_init(_args)
    settings = get_settings()
    valid, errors = discover_prompt_sets(settings.prompt_sets_dir)
    for error in errors.values():
        print(f"INVALID {error}")
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions("prompt_sets"))
    instance.add_dynamic_partitions("prompt_sets", [n for n in valid if n not in known])
    ok = not errors
    jobs = [defs.resolve_job_def("study_job"), defs.resolve_job_def("variation_job")]
    for name in valid:
        results = []
        for job in jobs:  # the variation of a run only once the run succeeded
            results.append(
                job.execute_in_process(partition_key=name, instance=instance, raise_on_error=False)
            )
            if not results[-1].success:
                break
        result = results[0]
        evaluations = [c for r in results for c in r.get_asset_check_evaluations()]
        failed = [
            c.check_name
            for c in evaluations
            if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR
        ]
        warned = [
            c.check_name
            for c in evaluations
            if not c.passed and c.severity == dg.AssetCheckSeverity.WARN
        ]
        status = "OK" if all(r.success for r in results) and not failed else "FAILED"
        ok = ok and status == "OK"
        extra = (f"; failed checks: {', '.join(failed)}" if failed else "") + (
            f"; warnings: {', '.join(warned)}" if warned else ""
        )
        print(f"{status} {name} (run {result.run_id}){extra}")
    analytics = defs.resolve_job_def("analytics_job").execute_in_process(
        instance=instance, raise_on_error=False
    )
    ok = ok and analytics.success
    print(f"{'OK' if analytics.success else 'FAILED'} analytics (run {analytics.run_id})")
    print(
        f"{len(valid)} prompt set(s) materialized on {instance.root_directory}; "
        "browse them with `make run`"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="study_query_dagster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the Dagster home and the app database if missing")
    sub.add_parser("materialize", help="materialize every prompt set headless")
    args = parser.parse_args(argv)
    get_settings.cache_clear()  # read now (and `.env` loaded, as `dagster dev` does)
    configure_logging(get_settings().log_level)
    return {"init": cmd_init, "materialize": cmd_materialize}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
