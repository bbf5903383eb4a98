"""Where results are written: CSV exports (EXPORTS_DIR, default data/exports) — the global
analytics' latest tables at the top, each run's tables under `<set>/<run>/` — and the HTML
study reports (REPORTS_DIR, default data/reports)."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field


class ExportsResource(dg.ConfigurableResource):
    directory: str = Field("data/exports", description="Folder for CSV exports (EXPORTS_DIR).")
    reports_directory: str = Field(
        "data/reports", description="Folder for the HTML study reports (REPORTS_DIR)."
    )

    def write_csv(self, name: str, frame: pd.DataFrame) -> Path:
        """Write `<directory>/<name>.csv` atomically (a reader never sees half a file). The
        global analytics' tables: each refresh replaces the previous one."""
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.csv"
        partial = path.with_suffix(".csv.tmp")
        frame.to_csv(partial, index=False)
        partial.replace(path)
        return path.resolve()

    @property
    def exports_path(self) -> Path:
        return Path(self.directory)

    @property
    def reports_path(self) -> Path:
        return Path(self.reports_directory)
