"""`QuotaStore`: the shared quota state of one scope, read and written in one short transaction
that holds the scope's lock, so that every process admitting requests to one provider account
sees what the others hold.

The lock: the transaction's first statement upserts the scope's row. On PostgreSQL
`INSERT ... ON CONFLICT DO UPDATE` locks that row until commit (other scopes are not blocked);
on SQLite any write takes the database's write lock, and as the first statement of the
transaction it waits for it with the busy timeout instead of failing to upgrade a read.
Leases whose holder stopped renewing them (`expires_at` passed) are deleted first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields

from sqlalchemy import delete, select, update
from sqlalchemy.engine import Connection

from .connection import DatabaseConnection
from .dialect import _insert, insert_or_update
from .models_quota import QuotaLease, QuotaScope, QuotaWindow

SCOPES = QuotaScope.__table__
WINDOWS = QuotaWindow.__table__
LEASES = QuotaLease.__table__


@dataclass
class Bucket:
    level: float | None = None  # None: never used (full)
    at: float | None = None


@dataclass
class WindowRow:
    """A model's adaptive quota as last reported (see services/inference/quota.py)."""

    requests_limit: float | None = None
    requests_remaining: float | None = None
    requests_ends_at: float | None = None
    tokens_limit: float | None = None
    tokens_remaining: float | None = None
    tokens_ends_at: float | None = None
    paused_until: float | None = None
    pauses: int = 0


WINDOW_FIELDS = tuple(f.name for f in fields(WindowRow))


@dataclass
class LeaseRow:
    holder: str
    model: str
    requests: int = 0  # admitted and not yet over: concurrency slots held
    tokens: float = 0.0  # estimated tokens of those requests, for the token quota
    waiting: int = 0  # requests of this holder waiting for admission
    expires_at: float = 0.0


@dataclass
class ScopeState:
    """What a scope holds right now; the caller changes it, the store writes it back."""

    scope: str
    rpm: Bucket
    tpm: Bucket
    windows: dict[str, WindowRow]  # by model ('' when none)
    leases: list[LeaseRow]  # every live lease of the scope, every holder
    changed_windows: set[str] = field(default_factory=set)

    def window(self, model: str) -> WindowRow:
        row = self.windows.get(model)
        if row is None:
            row = self.windows[model] = WindowRow()
        self.changed_windows.add(model)
        return row

    def own(self, holder: str) -> dict[str, LeaseRow]:
        return {lease.model: lease for lease in self.leases if lease.holder == holder}


class QuotaStore:
    def __init__(self, db: DatabaseConnection):
        self.db = db

    @contextmanager
    def locked(self, scope: str, holder: str, now: float) -> Iterator[ScopeState]:
        """The scope's state under its lock; on a clean exit, the buckets, the windows the
        caller touched (`state.window(model)`) and `holder`'s leases are written back in the
        same transaction."""
        with self.db.engine.begin() as conn:
            state = self._load(conn, scope, now)
            before = {m: lease.expires_at for m, lease in state.own(holder).items()}
            yield state
            self._save(conn, state, holder, before)

    def _load(self, conn: Connection, scope: str, now: float) -> ScopeState:
        lock = (
            _insert(conn)(SCOPES)
            .values(scope=scope)
            .on_conflict_do_update(index_elements=["scope"], set_={"scope": scope})
            .returning(SCOPES.c.rpm_level, SCOPES.c.rpm_at, SCOPES.c.tpm_level, SCOPES.c.tpm_at)
        )
        rpm_level, rpm_at, tpm_level, tpm_at = conn.execute(lock).one()
        conn.execute(delete(LEASES).where(LEASES.c.scope == scope, LEASES.c.expires_at < now))
        leases = [
            LeaseRow(r.holder, r.model, r.requests, r.tokens, r.waiting, r.expires_at)
            for r in conn.execute(select(LEASES).where(LEASES.c.scope == scope))
        ]
        windows = {
            r.model: WindowRow(*(getattr(r, name) for name in WINDOW_FIELDS))
            for r in conn.execute(select(WINDOWS).where(WINDOWS.c.scope == scope))
        }
        return ScopeState(
            scope, Bucket(rpm_level, rpm_at), Bucket(tpm_level, tpm_at), windows, leases
        )

    def _save(
        self, conn: Connection, state: ScopeState, holder: str, before: dict[str, float]
    ) -> None:
        scope = state.scope
        conn.execute(
            update(SCOPES)
            .where(SCOPES.c.scope == scope)
            .values(
                rpm_level=state.rpm.level,
                rpm_at=state.rpm.at,
                tpm_level=state.tpm.level,
                tpm_at=state.tpm.at,
            )
        )
        if state.changed_windows:
            conn.execute(
                insert_or_update(conn, WINDOWS, ["scope", "model"], list(WINDOW_FIELDS)),
                [
                    {"scope": scope, "model": m, **vars(state.windows[m])}
                    for m in sorted(state.changed_windows)
                ],
            )
        own = state.own(holder)
        live = [lease for lease in own.values() if lease.requests > 0 or lease.waiting > 0]
        gone = [m for m in before.keys() | own.keys() if m not in {x.model for x in live}]
        if gone:
            conn.execute(
                delete(LEASES).where(
                    LEASES.c.scope == scope,
                    LEASES.c.holder == holder,
                    LEASES.c.model.in_(gone),
                )
            )
        if live:
            conn.execute(
                insert_or_update(
                    conn,
                    LEASES,
                    ["scope", "holder", "model"],
                    ["requests", "tokens", "waiting", "expires_at"],
                ),
                [{"scope": scope, **vars(lease)} for lease in live],
            )

    # --- reading, for reports and tests --------------------------------------------------------

    def snapshot(self, scope: str) -> tuple[dict[str, WindowRow], list[LeaseRow]]:
        """The scope's windows and leases (expired ones included), without locking."""
        with self.db.engine.connect() as conn:
            windows = {
                r.model: WindowRow(*(getattr(r, name) for name in WINDOW_FIELDS))
                for r in conn.execute(select(WINDOWS).where(WINDOWS.c.scope == scope))
            }
            leases = [
                LeaseRow(r.holder, r.model, r.requests, r.tokens, r.waiting, r.expires_at)
                for r in conn.execute(select(LEASES).where(LEASES.c.scope == scope))
            ]
        return windows, leases

    def forget_holder(self, scope: str, holder: str) -> None:
        """Drop every lease of `holder` (a limiter that closed with nothing in flight)."""
        with self.db.engine.begin() as conn:
            conn.execute(delete(LEASES).where(LEASES.c.scope == scope, LEASES.c.holder == holder))
