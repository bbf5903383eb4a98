"""The study report in a real browser: headless Chromium opens the HTML file offline (every
network request is refused), the page renders, its matrix has the right cells, and a screenshot
is kept as a test artifact (test-artifacts/study_report.png, or under $TEST_ARTIFACTS_DIR)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from study_query_dagster.services.reports import NO_RESULTS
from tests.support.report_run import EXPECTED, run_demo

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]  # fmt: skip
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS_DIR") or ROOT / "test-artifacts")


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_report_renders_offline_with_the_right_matrix(db_url, tmp_path, llm_server):
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs Debian's chromium as root)")
    from playwright.sync_api import sync_playwright

    result, _ = run_demo(db_url, tmp_path, llm_server)
    assert result.success
    [report] = (tmp_path / "reports" / "report-demo").glob("*.html")

    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("request", lambda r: requests.append(r.url))
        page.route("http*://**", lambda route: route.abort())  # offline: nothing may load
        page.goto(report.as_uri())
        title = page.title()
        headers = page.eval_on_selector_all(
            "table.matrix thead th.target", "els => els.map(e => e.dataset.target)"
        )
        cells = page.eval_on_selector_all(
            "table.matrix td.cell",
            """tds => tds.map(td => ({
                prompt: td.closest('tr').dataset.prompt,
                target: td.dataset.target,
                groups: [...td.querySelectorAll('.group')].map(g => ({
                    kind: g.dataset.kind,
                    count: Number(g.dataset.count),
                    text: g.querySelector('.text').innerText,
                    visible: g.getBoundingClientRect().height > 0,
                    colour: getComputedStyle(g).borderLeftColor,
                })),
            }))""",
        )
        variation = page.inner_text("#variation")
        failures = page.inner_text("#failures")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shot = ARTIFACTS / "study_report.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()

    assert title.startswith("report-demo")
    assert [r for r in requests if not r.startswith("file:")] == []
    assert headers == ["cold", "warm"]
    found = {
        (c["prompt"], c["target"]): [
            (g["kind"], g["text"] if g["kind"] == "answer" else None, g["count"])
            for g in c["groups"]
        ]
        for c in cells
    }
    assert found == EXPECTED
    assert all(g["visible"] for c in cells for g in c["groups"])
    # an answer given in both targets has one colour in the row: Paris (cold) = Paris (warm)
    fr = {c["target"]: c["groups"] for c in cells if c["prompt"] == "fr"}
    assert fr["cold"][0]["colour"] == fr["warm"][0]["colour"] != fr["warm"][1]["colour"]
    assert "HTTP 400" in failures and NO_RESULTS in variation
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


@pytest.mark.e2e
@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
def test_shipped_variation_set_report_renders_its_findings(db_url, tmp_path):
    """The shipped `variation_disagree` set (scripted offline answers): its report, with the
    variation section filled in, as the README shows it."""
    if not Path(CHROMIUM).exists():
        pytest.skip("Chromium is not installed (make test installs Debian's chromium as root)")
    import dagster as dg
    from playwright.sync_api import sync_playwright

    from tests.services.test_reports import materialize_shipped

    with dg.instance_for_test() as instance:
        report, _ = materialize_shipped(
            "variation_disagree", db_url, tmp_path, instance, "variation_disagree.yaml"
        )
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.route("http*://**", lambda route: route.abort())
        page.goto(report.as_uri())
        counts = page.eval_on_selector_all(
            "tr[data-prompt='capital'] td.cell",
            "tds => tds.map(td => [...td.querySelectorAll('.group')].map(g => g.dataset.count))",
        )
        findings = page.eval_on_selector_all("#variation li", "lis => lis.map(li => li.innerText)")
        rows = page.eval_on_selector_all("#variation table tbody tr", "trs => trs.length")
        shot = ARTIFACTS / "study_report_variation.png"
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert counts == [["8", "2"], ["6", "4"]]  # Canberra 8 / Sydney 2; Sydney 6 / Canberra 4
    assert rows == 4 and len(findings) == 1 and findings[0].startswith("capital: model-a and")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    if os.environ.get("UPDATE_DOCS_SCREENSHOTS"):
        shutil.copy(shot, ROOT / "docs" / "images" / "study_report.png")
