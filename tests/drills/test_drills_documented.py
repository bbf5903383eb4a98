"""docs/DEPLOYMENT.md names every drill, and every test it names exists."""

import re

from tests.support.deployment import ROOT

DOC = (ROOT / "docs" / "DEPLOYMENT.md").read_text()


def test_every_drill_is_in_the_deployment_guide_and_vice_versa():
    section = DOC.split("## What the drills prove", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(tests/[\w/]+\.py)`", section))
    drills = {str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "drills").glob("test_*.py")}
    drills.discard("tests/drills/test_drills_documented.py")
    assert drills <= named
    assert all((ROOT / path).exists() for path in named), named
