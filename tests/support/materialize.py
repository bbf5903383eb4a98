"""Reading what `make materialize` prints."""

from __future__ import annotations


def summary_rows(stdout: str) -> dict[str, list[str]]:
    """The summary table the command ends with: {set: [status, calls, failures, checks...]}."""
    lines = stdout.split("\nset ")[-1].splitlines()
    assert lines[0].split() == ["status", "calls", "failures", "checks"], stdout[-2000:]
    rows = {}
    for line in lines[2:]:
        if not line.strip():
            break
        name, *cells = line.split()
        rows[name] = cells
    return rows
