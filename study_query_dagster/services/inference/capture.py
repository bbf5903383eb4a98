"""`CaptureWriter`: durable, batched writes of raw_calls rows and their group memberships.

Group commit: a caller submits a row and awaits its id; one background flush at a time takes
*everything* pending and writes it in a single transaction (in a worker thread, so the event
loop keeps serving calls). While a flush runs, new rows queue up for the next one. Under load
the commit count therefore follows the flush time, not the call count, and no row waits for a
timer: a completed call is on disk one or two flush durations after it finished (well within
a second), and always before the caller — a batch included — gets its result.

NUL characters are stored as U+FFFD by the database layer (PostgreSQL's JSONB cannot hold
U+0000); the text sent to the provider is unchanged.

Cancellation: `flush_sync()` writes what is pending from the event loop thread itself, for the
paths (task cancelled, Ctrl-C, loop shutting down) where no background flush will run again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import defaultdict
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from ...db import DatabaseConnection, GroupRepository, RawCallRepository
from ...db.connection import db_error_reason
from ...log import get_logger

logger = get_logger(__name__)


@dataclass(frozen=True)
class Membership:
    """Put the call in group `group_id` (at `position`, or after the last member if None)."""

    group_id: int
    position: int | None = None
    role: str | None = None


@dataclass
class _Item:
    row: dict[str, Any] | None  # a raw_calls row, or None for a membership-only item
    memberships: list[Membership] = field(default_factory=list)
    call_id: int | None = None  # for membership-only items
    future: asyncio.Future | None = None


class CaptureWriter:
    def __init__(self, db: DatabaseConnection):
        self.db = db
        self._pending: list[_Item] = []
        self._task: asyncio.Task | None = None
        # One writer thread: transactions never race each other, and the write in progress
        # (`_current`) is known, so flush_sync() can wait for it.
        self._executor: ThreadPoolExecutor | None = None  # started on first use, see close()
        self._current: tuple[Future, list[_Item]] | None = None
        self._write_lock = threading.Lock()
        self.flushes = 0
        self.rows_written = 0

    # --- submitting ----------------------------------------------------------------------------

    def submit(self, row: dict[str, Any], memberships: Iterable[Membership] = ()) -> asyncio.Future:
        """Queue a row; the future resolves to its raw_calls id once committed."""
        return self._enqueue(_Item(row=row, memberships=list(memberships)))

    def add_members(self, call_id: int, memberships: Iterable[Membership]) -> asyncio.Future:
        """Queue group memberships for an existing call; resolves to `call_id` once committed."""
        return self._enqueue(_Item(row=None, memberships=list(memberships), call_id=call_id))

    def _enqueue(self, item: _Item) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        item.future = loop.create_future()
        self._pending.append(item)
        if self._task is None or self._task.done() or self._task.get_loop() is not loop:
            self._task = loop.create_task(self._run(), name="capture-writer")
        return item.future

    @property
    def pending(self) -> int:
        return len(self._pending)

    # --- flushing --------------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending, []
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(1, thread_name_prefix="capture")
                future = self._executor.submit(self._write, batch)
                self._current = (future, batch)
                try:
                    # Shielded: a cancelled loop must not cancel a transaction mid-way.
                    ids = await asyncio.shield(asyncio.wrap_future(future))
                except Exception as exc:
                    self._failed(batch, exc)
                else:
                    _settle(batch, ids=ids)
        except asyncio.CancelledError:
            self.flush_sync()
            raise

    def flush_sync(self) -> None:
        """Write everything pending now, blocking the calling thread (cancellation paths);
        returns once every row submitted so far is committed."""
        if self._current is not None:
            future, running = self._current
            wait_futures([future])  # the background write in progress, if any
            if future.cancelled():
                pass
            elif future.exception() is not None:
                self._failed(running, future.exception())
            else:
                _settle(running, ids=future.result())
        batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            ids = self._write(batch)
        except Exception as exc:
            self._failed(batch, exc)
        else:
            _settle(batch, ids=ids)

    @staticmethod
    def _failed(batch: list[_Item], exc: BaseException) -> None:
        if any(item.future is not None and not item.future.done() for item in batch):
            logger.error("capture of %d row(s) failed: %s", len(batch), db_error_reason(exc))
        _settle(batch, error=exc)

    def flush_soon(self) -> None:
        """Flush synchronously on the loop's next turn: calls cancelled together (a batch)
        then share one transaction."""
        with contextlib.suppress(RuntimeError):  # no running loop: the caller flushes itself
            asyncio.get_running_loop().call_soon(self.flush_sync)

    def close(self) -> None:
        """Write what is pending and stop the writer thread (a later submit starts a new one)."""
        self.flush_sync()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _write(self, batch: list[_Item]) -> list[int]:
        with self._write_lock, self.db.session_scope() as session:
            rows = [item.row for item in batch if item.row is not None]
            new_ids = iter(RawCallRepository(session).insert_raw_calls(rows) if rows else [])
            ids: list[int] = []
            by_group: dict[int, list[dict[str, Any]]] = defaultdict(list)
            for item in batch:
                call_id = next(new_ids) if item.row is not None else item.call_id
                ids.append(call_id)
                for m in item.memberships:
                    by_group[m.group_id].append(
                        {"call_id": call_id, "position": m.position, "role": m.role}
                    )
            groups = GroupRepository(session)
            for group_id, members in by_group.items():
                groups.add_group_members(group_id, members)
        self.flushes += 1
        self.rows_written += len(rows)
        return ids


def _settle(batch: list[_Item], *, ids: list[int] | None = None, error=None) -> None:
    for i, item in enumerate(batch):
        future = item.future
        if future is None or future.done():
            continue
        # The loop may already be closed (interpreter shutdown): nobody is waiting then.
        with contextlib.suppress(RuntimeError):
            if error is not None:
                future.set_exception(error)
                # Marked as seen: the writer logged the failure once, and a caller that gave
                # up waiting (cancelled) must not add one traceback per row at shutdown.
                future.exception()
            else:
                future.set_result(ids[i])
