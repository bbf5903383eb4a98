"""docs/DEPLOYMENT.md describes the files as they are: paths exist, commands and settings match."""

from __future__ import annotations

import re
import shlex

import yaml

from .files import DAGSTER_YAML, ROOT, compose

DOC = (ROOT / "docs" / "DEPLOYMENT.md").read_text()


def test_every_deploy_path_the_doc_names_exists():
    paths = set(re.findall(r"`(deploy/[\w./-]+)`", DOC))
    paths |= {f"deploy/{p}" for p in re.findall(r"`((?:monitoring|postgres-init)/[\w.-]+)`", DOC)}
    assert "deploy/docker-compose.yml" in paths and "deploy/monitoring/status.graphql" in paths
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, missing


def test_the_services_table_shows_the_compose_commands_and_probes():
    services = compose()["services"]
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `([\w-]+)` \|.*$", DOC, re.M)
        if m.group(1) in services
    }
    assert set(rows) == set(services)
    for name in ("code-server", "webserver", "daemon"):
        assert shlex.join(services[name]["command"]) in rows[name], name
        probe = services[name]["healthcheck"]["test"][1:]
        if probe[0] != "python":
            assert shlex.join(probe) in rows[name], name
    assert services["migrate"]["command"][-1] in rows["migrate"]
    assert services["postgres"]["image"] in rows["postgres"]


def test_the_settings_table_shows_the_values_of_dagster_yaml():
    config = yaml.safe_load(DAGSTER_YAML.read_text())
    runs, pools = config["concurrency"]["runs"], config["concurrency"]["pools"]
    monitoring, retries = config["run_monitoring"], config["run_retries"]
    expected = [
        f"| `concurrency.runs.max_concurrent_runs` | {runs['max_concurrent_runs']} |",
        f"`{runs['tag_concurrency_limits'][0]['key']}`: {runs['tag_concurrency_limits'][0]['limit']}",
        f"| `concurrency.pools.default_limit` | {pools['default_limit']} |",
        f"| `concurrency.pools.granularity` | `{pools['granularity']}` |",
        f"`free_slots_after_run_end_seconds: {monitoring['free_slots_after_run_end_seconds']}`",
        f"`max_resume_run_attempts: {monitoring['max_resume_run_attempts']}`",
        f"poll every {monitoring['poll_interval_seconds']} s",
        f"`max_retries: {retries['max_retries']}`",
        f"`retry_on_asset_or_op_failure: {str(retries['retry_on_asset_or_op_failure']).lower()}`",
        f"`[{config['python_logs']['managed_python_loggers'][0]}]`",
    ]
    missing = [text for text in expected if text not in DOC]
    assert not missing, missing
