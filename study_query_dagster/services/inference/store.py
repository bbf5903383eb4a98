"""Where `InferenceService` keeps its calls: `CallStore` (a database: rows through the capture
writer, the response cache and groups read in a worker thread) or `NoStore` (no database:
nothing is kept, results have `id=None`)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any

from ...db import DatabaseConnection, GroupRepository, RawCall, RawCallRepository
from .capture import CaptureWriter, Membership

NEEDS_DB = "group_id needs a database (InferenceService(provider, db=...))"


class CallStore:
    def __init__(self, db: DatabaseConnection):
        self.db = db
        self.writer = CaptureWriter(db)

    async def save(self, row: dict[str, Any], memberships: Iterable[Membership]) -> int | None:
        """Capture a row; returns its id once committed."""
        return await self._committed(self.writer.submit(row, memberships))

    def save_cancelled(self, row: dict[str, Any], memberships: Iterable[Membership]) -> None:
        """Queue a cancelled call's row and write it on the loop's next turn (calls cancelled
        together then share one transaction)."""
        self.writer.submit(row, memberships)
        self.writer.flush_soon()

    async def join(self, call_id: int, memberships: Iterable[Membership]) -> int | None:
        """Add an existing call to groups."""
        memberships = list(memberships)
        if not memberships:
            return call_id
        return await self._committed(self.writer.add_members(call_id, memberships))

    async def _committed(self, future: asyncio.Future) -> int:
        # Not shielded: if we are cancelled the future is cancelled too, and the writer
        # skips settling it; the row itself is written regardless.
        try:
            return await future
        except asyncio.CancelledError:
            self.flush_sync()
            raise

    def flush_sync(self) -> None:
        """Write everything pending now (cancellation paths)."""
        self.writer.flush_sync()

    def close(self) -> None:
        self.writer.close()

    async def cached(self, request_hash: str) -> RawCall | None:
        """The newest successful call with this request hash (the response cache)."""

        def find() -> RawCall | None:
            with self.db.session_scope() as session:
                return RawCallRepository(session).latest_success(request_hash)

        return await asyncio.to_thread(find)

    async def check_group(self, group_id: int) -> None:
        def check() -> None:
            with self.db.session_scope() as session:
                if GroupRepository(session).get_group(group_id) is None:
                    raise ValueError(f"group_id {group_id} does not exist")

        await asyncio.to_thread(check)

    async def resolve_group(
        self,
        group_id: int | None,
        group_type: str,
        group_name: str | None,
        metadata: dict[str, Any],
    ) -> tuple[int, int]:
        """(group id, highest position in it): `group_id` (must exist), else (`group_type`,
        `group_name`) got-or-created, else a new group `<type>-<UTC stamp>-<8 hex>`."""

        def resolve() -> tuple[int, int]:
            with self.db.session_scope() as session:
                repo = GroupRepository(session)
                if group_id is not None:
                    if repo.get_group(group_id) is None:
                        raise ValueError(f"group_id {group_id} does not exist")
                    gid = group_id
                elif group_name:
                    gid = repo.get_or_create_group(group_type, group_name, metadata_json=metadata)
                else:
                    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                    name = f"{group_type}-{stamp}-{uuid.uuid4().hex[:8]}"
                    gid = repo.create_group(group_type, name, metadata_json=metadata)
                return gid, repo.max_position(gid)

        return await asyncio.to_thread(resolve)


class NoStore:
    """No database: nothing is written; asking for a group is an error."""

    db = None

    async def save(self, row, memberships) -> None:
        return None

    def save_cancelled(self, row, memberships) -> None:
        pass

    async def join(self, call_id, memberships) -> None:
        return None

    def flush_sync(self) -> None:
        pass

    def close(self) -> None:
        pass

    async def cached(self, request_hash: str) -> None:
        return None

    async def check_group(self, group_id: int) -> None:
        raise ValueError(NEEDS_DB)

    async def resolve_group(self, group_id, group_type, group_name, metadata):
        if group_id is not None:
            raise ValueError(NEEDS_DB)
        return None, 0
