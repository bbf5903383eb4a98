"""Command-line helpers behind the Makefile: `python -m study_query_dagster.cli init|materialize`."""

from __future__ import annotations

import argparse
import os
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
    home = os.environ.get("DAGSTER_HOME")
    if home:
        ensure_dagster_home(Path(home))
    settings = get_settings()
    db = DatabaseConnection(settings.database_url)
    db.init_db()
    db.dispose()
    print(f"app database ready: {db.safe_url}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="study_query_dagster")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("init", help="create the Dagster home and the app database if missing")
    args = parser.parse_args(argv)
    configure_logging(get_settings().log_level)
    return {"init": cmd_init}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
