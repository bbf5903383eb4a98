"""`RunFailureRepository`: failed Dagster runs, recorded once each for the analytics."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select

from .dialect import Repository, insert_ignore
from .models_v2 import RunFailure
from .types import utcnow


class RunFailureRepository(Repository):
    def record_run_failure(
        self,
        run_id: str,
        job_name: str,
        *,
        partition_key: str | None = None,
        failed_steps: Sequence[str] = (),
        error: str | None = None,
        failed_at: datetime | None = None,
    ) -> bool:
        """Record a failed run once (a sensor may see it again): True if it was new."""
        row = {
            "run_id": run_id,
            "job_name": job_name,
            "partition_key": partition_key,
            "failed_steps": list(failed_steps),
            "error": error,
            "failed_at": failed_at or utcnow(),
        }
        stmt = insert_ignore(self.session, RunFailure, ["run_id"])
        result = self.session.connection().execute(stmt, row)
        return bool(result.rowcount)

    def recent_run_failures(self, limit: int = 20) -> list[RunFailure]:
        stmt = select(RunFailure).order_by(RunFailure.failed_at.desc(), RunFailure.id.desc())
        return list(self.session.scalars(stmt.limit(limit)))
