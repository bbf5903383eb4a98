"""End to end: a real `dagster dev` (webserver + daemon) on a free loopback port, a prompt set
file dropped into the watched folder, the sensor's run reaching SUCCESS, the calls in the app
database, and a headless Chromium screenshot of the asset lineage."""

import os
import shutil
from pathlib import Path

import pytest
from sqlalchemy import func, select

from study_query_dagster.cli import ensure_dagster_home
from study_query_dagster.db import DatabaseConnection, RawCall
from tests.support.dagster_dev import DagsterDev
from tests.support.pipeline import write_prompt_set
from tests.support.processes import HANG_GUARD_S, poll_until

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
SET = """
    name: e2e-capitals
    system: Answer with the city only.
    prompts:
      - {id: fr, text: "Capital of France?"}
      - {id: jp, text: "Capital of Japan?"}
    targets:
      - {provider: offline, model: offline-echo}
    samples: 2
    embed: on
"""


@pytest.fixture
def dagster_dev(tmp_path):
    home = tmp_path / "dagster_home"
    ensure_dagster_home(home)
    prompt_dir = tmp_path / "prompt_sets"
    prompt_dir.mkdir()
    db_url = f"sqlite:///{tmp_path / 'app.db'}"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update(
        DATABASE_URL=db_url, PROMPT_SETS_DIR=str(prompt_dir), PROMPT_SET_SENSOR_INTERVAL_S="3"
    )
    with DagsterDev(home, env, tmp_path / "dagster_dev.log") as dev:
        yield dev, prompt_dir, db_url


def wait_for_analytics(dev: DagsterDev, min_calls: int) -> dict:
    """Metadata of the first provider_comparison materialization that counts `min_calls`
    (however long the daemon takes while it lives; `HANG_GUARD_S` only ends a hang)."""

    import dagster as dg

    with dg.DagsterInstance.from_config(str(dev.home)) as instance:

        def refreshed() -> dict | None:
            event = instance.get_latest_materialization_event(dg.AssetKey("provider_comparison"))
            if event is None:
                return None
            metadata = event.asset_materialization.metadata
            values = {k: getattr(v, "value", v) for k, v in metadata.items()}
            return values if values["calls"] >= min_calls else None

        return poll_until(
            refreshed,
            alive=dev.check_alive,
            what="analytics were not refreshed",
            detail=dev.log_tail,
        )


def screenshot(url: str, path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1700, "height": 1000})
        page.goto(url, wait_until="networkidle")
        # the lineage graph draws its asset nodes once the code location has answered
        page.get_by_text("prompt_set", exact=True).first.wait_for(timeout=HANG_GUARD_S * 1000)
        page.wait_for_load_state("networkidle")  # and whatever it fetched for them
        page.screenshot(path=str(path))
        browser.close()


@pytest.mark.e2e
def test_dropped_prompt_set_runs_and_lineage_renders(dagster_dev, tmp_path):
    dev, prompt_dir, db_url = dagster_dev
    write_prompt_set(prompt_dir, "e2e-capitals", SET)

    run = dev.wait_for_run(
        lambda r: (
            r["jobName"] == "study_job"
            and {"key": "dagster/partition", "value": "e2e-capitals"} in r["tags"]
        )
    )
    assert run["status"] == "SUCCESS", dev.log_tail()
    assert {t["key"]: t["value"] for t in run["tags"]}["dagster/sensor_name"] == "prompt_set_sensor"

    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        texts = session.scalar(select(func.count()).where(RawCall.modality == "text"))
        embeddings = session.scalar(select(func.count()).where(RawCall.modality == "embedding"))
    db.dispose()
    assert (texts, embeddings) == (4, 1)

    # study_job ran its steps in the run's own process, and wrote the study report
    import dagster as dg

    with dg.DagsterInstance.from_config(str(dev.home)) as instance:
        engine = [r.user_message for r in instance.all_logs(run["runId"])
                  if r.dagster_event and r.dagster_event.event_type_value == "ENGINE_EVENT"]  # fmt: skip
        assert any("in process" in m for m in engine), engine
        event = instance.get_latest_materialization_event(dg.AssetKey("study_results"))
        report = Path(event.asset_materialization.metadata["report"].value)
    assert report.exists() and report.parent.name == "e2e-capitals"
    kinds = dev.graphql('{ assetNodes(assetKeys: [{path: ["inference_run"]}]) { kinds } }')[
        "assetNodes"
    ][0]["kinds"]
    assert sorted(kinds) == ["llm", "sqlite"]  # what it is, not "openai"

    # Declarative automation refreshes the analytics after the run, in the real daemon.
    comparison = wait_for_analytics(dev, min_calls=4)
    assert comparison["models"] == 1

    # A broken file: one failing run, its partition red; fixed, it runs again.
    (prompt_dir / "e2e-broken.yaml").write_text("name: e2e-broken\nprompts: nope\n")
    broken = dev.wait_for_run(
        lambda r: {"key": "dagster/partition", "value": "e2e-broken"} in r["tags"]
    )
    assert broken["status"] == "FAILURE"
    write_prompt_set(prompt_dir, "e2e-broken", SET.replace("e2e-capitals", "e2e-broken"))
    fixed = dev.wait_for_run(
        lambda r: (
            {"key": "dagster/partition", "value": "e2e-broken"} in r["tags"]
            and r["runId"] != broken["runId"]
        )
    )
    assert fixed["status"] == "SUCCESS", dev.log_tail()
    assert dev.log_path.read_text().count("invalid prompt set file") == 1  # logged once

    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs Debian's chromium as root)")
    image = tmp_path / "asset_lineage.png"
    screenshot(f"{dev.url}/assets/inference_run?view=lineage&lineageDepth=2", image)
    assert image.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and image.stat().st_size > 20_000
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(image, ROOT / "docs" / "images" / "asset_lineage.png")
