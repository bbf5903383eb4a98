"""Where analytics assets write their CSV exports (EXPORTS_DIR, default data/exports)."""

from pathlib import Path

import dagster as dg
import pandas as pd
from pydantic import Field


class ExportsResource(dg.ConfigurableResource):
    directory: str = Field("data/exports", description="Folder for CSV exports (EXPORTS_DIR).")

    def write_csv(self, name: str, frame: pd.DataFrame) -> Path:
        """Write `<directory>/<name>.csv` atomically (a reader never sees half a file)."""
        folder = Path(self.directory)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.csv"
        partial = path.with_suffix(".csv.tmp")
        frame.to_csv(partial, index=False)
        partial.replace(path)
        return path.resolve()
