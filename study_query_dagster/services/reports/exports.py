"""CSV exports of one run: `<exports>/<set>/<run>/<table>.csv`, written once and never
overwritten. Exporting a run again with the same content reuses its folder; different content
(the run was resumed and finished since) goes to the next free `<run>.2`, `<run>.3`… so an
export someone already read or shared never changes under them."""

from __future__ import annotations

import csv
import io
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _same(folder: Path, files: Mapping[str, bytes]) -> bool:
    present = sorted(p.name for p in folder.iterdir() if p.is_file())
    if present != sorted(files):
        return False
    return all((folder / name).read_bytes() == data for name, data in files.items())


def write_run_exports(
    base: Path, prompt_set: str, run_id: str, tables: Mapping[str, tuple[list[dict], list[str]]]
) -> Path:
    """Write `tables` ({name: (rows, columns)}) as `<base>/<prompt_set>/<run_id>[.k]/<name>.csv`
    and return the folder. A folder appears complete or not at all (written aside, then
    renamed), so two writers cannot mix their files either."""
    for part in (prompt_set, run_id):
        if not _SAFE.match(part):
            raise ValueError(f"not usable as a folder name: {part!r}")
    files = {
        f"{name}.csv": csv_text(rows, columns).encode("utf-8")
        for name, (rows, columns) in tables.items()
    }
    parent = base / prompt_set
    parent.mkdir(parents=True, exist_ok=True)
    version = 1
    while True:
        folder = parent / (run_id if version == 1 else f"{run_id}.{version}")
        if folder.exists():
            if _same(folder, files):
                return folder.resolve()
            version += 1
            continue
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{run_id}.", suffix=".tmp"))
        for name, data in files.items():
            (staging / name).write_bytes(data)
        try:
            os.rename(staging, folder)  # fails if another writer made the folder meanwhile
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)
            continue  # look at what is there now: the same content, or the next version
        return folder.resolve()
