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

from sqlalchemy import bindparam, delete, select, update
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


class _Statements:
    """The round's statements, built once per dialect (building an upsert costs more than
    running it) with bound parameters."""

    def __init__(self, conn: Connection):
        insert = _insert(conn)
        lock = insert(SCOPES).values(scope=bindparam("scope"))
        self.lock = lock.on_conflict_do_update(
            index_elements=["scope"], set_={"scope": lock.excluded.scope}
        ).returning(SCOPES.c.rpm_level, SCOPES.c.rpm_at, SCOPES.c.tpm_level, SCOPES.c.tpm_at)
        self.leases = select(LEASES).where(LEASES.c.scope == bindparam("scope"))
        self.windows = select(WINDOWS).where(WINDOWS.c.scope == bindparam("scope"))
        self.expire = delete(LEASES).where(
            LEASES.c.scope == bindparam("scope"), LEASES.c.expires_at < bindparam("now")
        )
        self.buckets = (
            update(SCOPES)
            .where(SCOPES.c.scope == bindparam("key"))
            .values({c: bindparam(c) for c in ("rpm_level", "rpm_at", "tpm_level", "tpm_at")})
        )
        self.save_windows = insert_or_update(conn, WINDOWS, ["scope", "model"], list(WINDOW_FIELDS))
        self.save_leases = insert_or_update(
            conn,
            LEASES,
            ["scope", "holder", "model"],
            ["requests", "tokens", "waiting", "expires_at"],
        )
        self.drop_leases = delete(LEASES).where(
            LEASES.c.scope == bindparam("scope"),
            LEASES.c.holder == bindparam("holder"),
            LEASES.c.model.in_(bindparam("models", expanding=True)),
        )


_BUCKET_COLUMNS = ("rpm_level", "rpm_at", "tpm_level", "tpm_at")


class _Before:
    """What a round read, to write back only what it changed."""

    def __init__(self, state: ScopeState, holder: str):
        self.buckets = (state.rpm.level, state.rpm.at, state.tpm.level, state.tpm.at)
        self.windows = {m: dict(vars(w)) for m, w in state.windows.items()}
        self.leases = {
            m: {"scope": state.scope, **vars(lease)} for m, lease in state.own(holder).items()
        }


class QuotaStore:
    def __init__(self, db: DatabaseConnection):
        self.db = db
        self._statements: _Statements | None = None

    @contextmanager
    def locked(self, scope: str, holder: str, now: float) -> Iterator[ScopeState]:
        """The scope's state under its lock; on a clean exit, what changed of the buckets, of
        the windows the caller touched (`state.window(model)`) and of `holder`'s leases is
        written back in the same transaction."""
        with self.db.engine.begin() as conn:
            if self._statements is None:
                self._statements = _Statements(conn)
            state = self._load(conn, scope, now)
            before = _Before(state, holder)
            yield state
            self._save(conn, state, holder, before)

    def _load(self, conn: Connection, scope: str, now: float) -> ScopeState:
        sql = self._statements
        rpm_level, rpm_at, tpm_level, tpm_at = conn.execute(sql.lock, {"scope": scope}).one()
        leases = [
            LeaseRow(r.holder, r.model, r.requests, r.tokens, r.waiting, r.expires_at)
            for r in conn.execute(sql.leases, {"scope": scope})
        ]
        if any(lease.expires_at < now for lease in leases):  # their holders stopped renewing
            conn.execute(sql.expire, {"scope": scope, "now": now})
            leases = [lease for lease in leases if lease.expires_at >= now]
        windows = {
            r.model: WindowRow(*(getattr(r, name) for name in WINDOW_FIELDS))
            for r in conn.execute(sql.windows, {"scope": scope})
        }
        return ScopeState(
            scope, Bucket(rpm_level, rpm_at), Bucket(tpm_level, tpm_at), windows, leases
        )

    def _save(self, conn: Connection, state: ScopeState, holder: str, before: _Before) -> None:
        sql, scope = self._statements, state.scope
        buckets = (state.rpm.level, state.rpm.at, state.tpm.level, state.tpm.at)
        if buckets != before.buckets:
            conn.execute(sql.buckets, dict(zip(_BUCKET_COLUMNS, buckets, strict=True), key=scope))
        windows = [
            {"scope": scope, "model": m, **vars(state.windows[m])}
            for m in sorted(state.changed_windows)
            if vars(state.windows[m]) != before.windows.get(m)
        ]
        if windows:
            conn.execute(sql.save_windows, windows)
        own = state.own(holder)
        live = {m: lease for m, lease in own.items() if lease.requests > 0 or lease.waiting > 0}
        gone = sorted((before.leases.keys() | own.keys()) - live.keys())
        if gone:
            conn.execute(sql.drop_leases, {"scope": scope, "holder": holder, "models": gone})
        rows = [{"scope": scope, **vars(lease)} for lease in live.values()]
        if rows and [r for r in rows if before.leases.get(r["model"]) != r]:
            conn.execute(sql.save_leases, rows)

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
