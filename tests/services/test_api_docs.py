"""The runnable examples in docs/API.md run as written (offline, no keys)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

API_MD = Path(__file__).resolve().parents[2] / "docs" / "API.md"
EXAMPLES = [
    block
    for block in re.findall(r"```python\n(.*?)```", API_MD.read_text(), re.S)
    if "asyncio.run(" in block
]


def test_there_are_examples():
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("index", range(len(EXAMPLES)))
def test_example_runs(index, tmp_path):
    script = tmp_path / "example.py"
    script.write_text(EXAMPLES[index])
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                          text=True, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
