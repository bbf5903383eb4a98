"""Command-line helpers behind the Makefile: `python -m study_query_dagster.cli init|materialize`."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field
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


# Dagster's console logger would print every line our own handler prints a second time (the
# package's loggers are managed by the instance): it only speaks for errors nobody caught.
QUIET_DAGSTER = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}


@dataclass
class Outcome:
    """One line of the summary `make materialize` ends with."""

    name: str
    status: str  # OK | FAILED | INVALID
    calls: int | None = None
    failures: int | None = None
    checks: str = ""
    report: str = ""
    errors: list[str] = field(default_factory=list)


def _step_errors(result) -> list[str]:
    errors = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.event_specific_data.error
            message = error.message.strip() if error else "failed"
            errors.append(f"{event.step_key}: {message.splitlines()[0] if message else ''}")
    return errors


def _metadata(result, asset: str) -> dict:
    """The asset's materialization metadata, or the metadata of its failure."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.path == [asset]:
            return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE" and event.step_key == asset:
            failure = event.event_specific_data.user_failure_data
            if failure is not None:
                return {k: getattr(v, "value", v) for k, v in failure.metadata.items()}
    return {}


def study_outcome(name: str, results: list) -> Outcome:
    """The line of a set: its study_job run, then its variation_job run when there was one."""
    import dagster as dg

    checks = [c for result in results for c in result.get_asset_check_evaluations()]
    failed = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.ERROR]
    warned = [c for c in checks if not c.passed and c.severity == dg.AssetCheckSeverity.WARN]
    run = _metadata(results[0], "inference_run")
    # the last report written: the variation run's, which has the variation section
    reports = [_metadata(r, "study_results").get("report") for r in results]
    report = next((r for r in reversed(reports) if r), None)
    errors = [e for result in results for e in _step_errors(result)]
    errors += [f"check {c.check_name} failed: {c.description or ''}".rstrip(": ") for c in failed]
    errors += [f"check {c.check_name} warns: {c.description or ''}".rstrip(": ") for c in warned]
    passed = len(checks) - len(failed) - len(warned)
    summary = f"{passed}/{len(checks)} passed" if checks else "not run"
    if warned:
        summary += f", {len(warned)} warn"
    return Outcome(
        name=name,
        status="OK" if all(r.success for r in results) and not failed else "FAILED",
        calls=run.get("calls"),
        failures=run.get("failures"),
        checks=summary,
        report=str(report or ""),
        errors=errors,
    )


def summary_table(outcomes: list[Outcome]) -> str:
    header = ("set", "status", "calls", "failures", "checks")
    rows = [
        (
            o.name,
            o.status,
            "" if o.calls is None else str(o.calls),
            "" if o.failures is None else str(o.failures),
            o.checks,
        )
        for o in outcomes
    ]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    numeric = {2, 3}

    def line(cells) -> str:
        return "  ".join(
            c.rjust(w) if i in numeric else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def cmd_materialize(_args) -> int:
    """Register every prompt set and materialize the whole graph for each (study_job, then
    variation_job), headless, on the instance in DAGSTER_HOME; end with a summary table (set,
    status, calls, failures, checks), every error and warning, and the study reports. Non-zero
    if a file is invalid, a run fails or an ERROR check fails."""
    import dagster as dg

    from .definitions import defs
    from .services.prompt_sets import discover_prompt_sets

    cmd_init(_args)
    settings = get_settings()
    valid, errors = discover_prompt_sets(settings.prompt_sets_dir)
    outcomes = [
        Outcome(
            Path(path).name, "INVALID", checks="file not run", errors=[str(p) for p in e.problems]
        )
        for path, e in errors.items()
    ]
    instance = dg.DagsterInstance.get()
    known = set(instance.get_dynamic_partitions("prompt_sets"))
    instance.add_dynamic_partitions("prompt_sets", [n for n in valid if n not in known])
    jobs = [defs.resolve_job_def("study_job"), defs.resolve_job_def("variation_job")]
    for name in valid:
        print(f"running {name} ...", flush=True)
        results = []
        for job in jobs:  # the variation of a run (and its report again) once the run succeeded
            results.append(
                job.execute_in_process(
                    partition_key=name,
                    instance=instance,
                    raise_on_error=False,
                    run_config=QUIET_DAGSTER,
                )
            )
            if not results[-1].success:
                break
        outcomes.append(study_outcome(name, results))
    print("refreshing analytics ...", flush=True)
    analytics = defs.resolve_job_def("analytics_job").execute_in_process(
        instance=instance, raise_on_error=False, run_config=QUIET_DAGSTER
    )
    outcomes.append(
        Outcome(
            "(analytics)", "OK" if analytics.success else "FAILED", errors=_step_errors(analytics)
        )
    )

    print()
    print(summary_table(outcomes))
    problems = [(o.name, e) for o in outcomes for e in o.errors]
    if problems:
        print("\nerrors and warnings:")
        for name, error in problems:
            print(f"  {name}: {error}")
    reports = [o for o in outcomes if o.report]
    if reports:
        print("\nstudy reports (open in a browser):")
        for o in reports:
            print(f"  {o.name}: {o.report}")
    print(
        f"\n{len(valid)} prompt set(s) materialized on {instance.root_directory}; "
        "browse them with `make run`"
    )
    return 0 if all(o.status == "OK" for o in outcomes) else 1


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
