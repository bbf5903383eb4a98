"""`RawCallRepository`: the immutable call capture (`raw_calls`): bulk inserts, reads, search.

Every write validates its input first and raises `ValueError` naming the row, field and value,
so a bad row fails the whole call before anything reaches the database.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Text, cast, func, insert, or_, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ColumnElement

from ..log import get_logger
from .dialect import CHUNK_SIZE, Repository
from .models_v2 import CALL_STATUSES, CallArtifact, GroupMember, RawCall
from .queries import CallFilter

logger = get_logger(__name__)

RAW_CALL_FIELDS = {
    "provider",
    "model",
    "modality",
    "status",
    "request_hash",
    "request_json",
    "response_json",
    "error_json",
    "latency_ms",
    "tokens_json",
    "metadata_json",
    "created_at",
}


def validate_raw_call(row: Mapping[str, Any], where: str = "raw_call") -> dict[str, Any]:
    unknown = set(row) - RAW_CALL_FIELDS
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {sorted(unknown)}")
    provider = row.get("provider")
    if not isinstance(provider, str) or not provider.strip():
        raise ValueError(f"{where}: field 'provider' is required (got {provider!r})")
    status = row.get("status")
    if status not in CALL_STATUSES:
        raise ValueError(
            f"{where}: field 'status' must be one of {', '.join(CALL_STATUSES)} (got {status!r})"
        )
    if row.get("request_json") is None:
        raise ValueError(f"{where}: field 'request_json' is required")
    latency = row.get("latency_ms")
    if latency is not None and (not isinstance(latency, int | float) or latency < 0):
        raise ValueError(f"{where}: field 'latency_ms' must be a number >= 0 (got {latency!r})")
    return {"modality": "text", **row}


LOGPROBS_ARTIFACT = "logprobs"
_DATA_URI = "data:{content_type};base64,"


def inline_artifact(
    artifact_type: str, payload: bytes, content_type: str = "application/json"
) -> dict[str, Any]:
    """A `call_artifacts` row (without its call_id) holding `payload` itself as a base64 data
    URI, so it lives in the database on both backends, with its size and sha256."""
    encoded = base64.b64encode(payload).decode("ascii")
    return {
        "artifact_type": artifact_type,
        "uri": _DATA_URI.format(content_type=content_type) + encoded,
        "content_type": content_type,
        "byte_size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    }


def artifact_payload(artifact: CallArtifact) -> bytes:
    """The bytes of an artifact stored as a data URI (see `inline_artifact`)."""
    prefix = _DATA_URI.format(content_type=artifact.content_type)
    if not artifact.uri.startswith(prefix):
        raise ValueError(
            f"call_artifact {artifact.id}: not an inline payload ({artifact.uri[:40]})"
        )
    return base64.b64decode(artifact.uri[len(prefix) :])


def json_absent(column) -> ColumnElement[bool]:
    """No value in a JSON column: SQL NULL (new rows) or the JSON text `null` (rows written
    before absent values were stored as SQL NULL; the table is append-only, so they stay)."""
    return or_(column.is_(None), cast(column, Text) == "null")


def probe_append_only(db, call_id: int) -> tuple[bool, str]:
    """Try to UPDATE a captured call inside a savepoint that is always rolled back: (refused by
    the append-only guard, what the database said). Nothing changes either way."""
    refused, message = False, "UPDATE was accepted"
    with db.engine.connect() as conn:
        outer = conn.begin()
        savepoint = conn.begin_nested()
        try:
            conn.execute(
                text("UPDATE raw_calls SET status = status WHERE id = :id"), {"id": call_id}
            )
        except DBAPIError as exc:
            message = str(exc.orig).strip().splitlines()[0]
            # Refused by the append-only guard, not by something else (e.g. a locked database).
            refused = "append-only" in message
        finally:
            if savepoint.is_active:
                savepoint.rollback()
            outer.rollback()
    return refused, message


def _searchable_texts(request_json: Any, response_json: Any) -> Iterable[str]:
    """What a person wrote or a model answered: the prompt, message contents (plain or text
    parts), embedding inputs and the answer - not roles, parameters or ids."""
    request = request_json if isinstance(request_json, Mapping) else {}
    response = response_json if isinstance(response_json, Mapping) else {}
    contents = [m.get("content") for m in request.get("messages") or [] if isinstance(m, Mapping)]
    inputs = request.get("input")
    for value in [
        request.get("prompt"),
        *contents,
        response.get("text"),
        *(inputs if isinstance(inputs, list) else [inputs]),
    ]:
        if isinstance(value, str):
            yield value
        elif isinstance(value, list):  # content parts: [{"type": "text", "text": ...}]
            yield from (
                p["text"]
                for p in value
                if isinstance(p, Mapping) and isinstance(p.get("text"), str)
            )


class RawCallRepository(Repository):
    """v2 call capture within one session (the caller owns the transaction)."""

    def insert_raw_call(self, **fields: Any) -> int:
        row = validate_raw_call(fields)
        call_id = self.session.execute(insert(RawCall).returning(RawCall.id), row).scalar_one()
        logger.info(
            "captured raw_call id=%s provider=%s model=%s status=%s",
            call_id,
            row["provider"],
            row.get("model"),
            row["status"],
        )
        return call_id

    def insert_raw_calls(
        self, rows: Iterable[Mapping[str, Any]], chunk_size: int = CHUNK_SIZE
    ) -> list[int]:
        """Bulk insert; ids come back in input order. One round trip per chunk."""
        validated = [validate_raw_call(r, f"raw_calls row {i}") for i, r in enumerate(rows)]
        started = time.perf_counter()
        ids: list[int] = []
        for start in range(0, len(validated), chunk_size):
            # An executemany takes its columns from the first row and silently drops keys the
            # others add, so rows are sent in consecutive runs that share the same keys.
            for _, run in groupby(validated[start : start + chunk_size], key=frozenset):
                ids.extend(self._insert_chunk(list(run)))
        # DEBUG: the capture writer commits many small batches per run, and every INFO record
        # becomes an event in the Dagster run (the instance manages our loggers).
        logger.debug(
            "captured %d raw_calls in %.1f ms", len(ids), (time.perf_counter() - started) * 1000
        )
        return ids

    def _insert_chunk(self, chunk: list[dict[str, Any]]) -> list[int]:
        if self.dialect == "sqlite":
            # RETURNING with guaranteed order makes SQLAlchemy send one row per statement on
            # SQLite; unordered RETURNING lets it send up to 1,000 rows per INSERT
            # (insertmanyvalues). That beats an executemany too, which releases and retakes
            # the GIL once per row - costly while the event loop is busy calling providers.
            # Sorting restores input order: the transaction holds SQLite's only write lock,
            # and a rowid table with nothing ever deleted (raw_calls is append-only) numbers
            # one statement's rows max+1, max+2... in VALUES order.
            table = RawCall.__table__
            stmt = insert(table).returning(table.c.id)
            return sorted(self.session.connection().execute(stmt, chunk).scalars())
        # PostgreSQL: batched multi-row INSERT ... RETURNING, ids sorted to input order.
        stmt = insert(RawCall).returning(RawCall.id, sort_by_parameter_order=True)
        return list(self.session.execute(stmt, chunk).scalars())

    def get_raw_call(self, call_id: int) -> RawCall | None:
        return self.session.get(RawCall, call_id)

    def query_raw_calls(
        self,
        provider: str | Sequence[str] | None = None,
        model: str | Sequence[str] | None = None,
        status: str | Sequence[str] | None = None,
        modality: str | Sequence[str] | None = None,
        group_id: int | None = None,
        date_range: tuple[datetime | None, datetime | None] | None = None,
        limit: int | None = 100,
        offset: int = 0,
        has_error: bool | None = None,
    ) -> list[RawCall]:
        """Matching calls, newest first. `has_error` keeps calls with (True) or without
        (False) an error_json; an absent value is SQL NULL or, in older rows, JSON null."""
        where = CallFilter(provider, model, status, modality, group_id, date_range)
        stmt = where.apply(select(RawCall)).order_by(RawCall.created_at.desc(), RawCall.id.desc())
        if has_error is not None:
            absent = json_absent(RawCall.error_json)
            stmt = stmt.where(~absent if has_error else absent)
        stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        return list(self.session.scalars(stmt))

    def count_raw_calls(self, where: CallFilter | None = None) -> int:
        stmt = select(func.count()).select_from(RawCall)
        return self.session.scalar((where or CallFilter()).apply(stmt)) or 0

    def search_raw_calls(
        self, term: str, limit: int = 100, where: CallFilter | None = None
    ) -> list[RawCall]:
        """Calls whose prompt or answer contains `term` (case-insensitive), newest first,
        among those matching `where`.

        SQL narrows the candidates with LIKE over the JSON text; Python then keeps only rows
        where the term is in the prompt, a message's content, an embedding input or the
        answer (not in a key, a role, a parameter or an id).
        """
        found: list[RawCall] = []
        matches = self._search(term, where)
        if limit <= 0:
            return found
        for call in matches:
            found.append(call)
            if len(found) >= limit:
                break
        return found

    def count_search_matches(self, term: str, where: CallFilter | None = None) -> int:
        """How many calls `search_raw_calls` finds without a limit."""
        return sum(1 for _ in self._search(term, where))

    def _search(self, term: str, where: CallFilter | None) -> Iterator[RawCall]:
        if not term:  # checked now, not when the generator first runs
            raise ValueError("search term must not be empty")
        escaped = term.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        pattern = f"%{escaped}%"
        stmt = (
            select(RawCall)
            .where(
                cast(RawCall.request_json, Text).ilike(pattern, escape="\\")
                | cast(RawCall.response_json, Text).ilike(pattern, escape="\\")
            )
            .order_by(RawCall.created_at.desc(), RawCall.id.desc())
            .execution_options(yield_per=500)
        )
        if where is not None:
            stmt = where.apply(stmt)
        needle = term.casefold()
        return (
            call
            for call in self.session.scalars(stmt)
            if any(
                needle in text.casefold()
                for text in _searchable_texts(call.request_json, call.response_json)
            )
        )

    def latest_success(self, request_hash: str) -> RawCall | None:
        """The newest successful call with this request hash (the response cache)."""
        stmt = (
            select(RawCall)
            .where(RawCall.request_hash == request_hash, RawCall.status == "success")
            .order_by(RawCall.id.desc())
            .limit(1)
        )
        return self.session.scalars(stmt).first()

    def calls_in_group(self, group_id: int, modality: str | None = "text") -> list[RawCall]:
        """Every call that is a member of the group, oldest first."""
        stmt = select(RawCall).join(GroupMember, GroupMember.call_id == RawCall.id)
        stmt = stmt.where(GroupMember.group_id == group_id)
        if modality is not None:
            stmt = stmt.where(RawCall.modality == modality)
        return list(self.session.scalars(stmt.order_by(RawCall.id)))

    # --- artifacts: large payloads of a call --------------------------------------------

    def insert_call_artifacts(self, rows: Iterable[Mapping[str, Any]]) -> int:
        """Add artifact rows (each with its call_id); returns how many."""
        rows = [dict(r) for r in rows]
        for i, row in enumerate(rows):
            if not isinstance(row.get("call_id"), int) or not row.get("uri"):
                raise ValueError(f"call_artifacts row {i}: call_id and uri are required")
        if rows:
            self.session.execute(insert(CallArtifact), rows)
        return len(rows)

    def call_artifacts(self, call_id: int, artifact_type: str | None = None) -> list[CallArtifact]:
        stmt = select(CallArtifact).where(CallArtifact.call_id == call_id)
        if artifact_type is not None:
            stmt = stmt.where(CallArtifact.artifact_type == artifact_type)
        return list(self.session.scalars(stmt.order_by(CallArtifact.id)))

    def logprobs(self, call_id: int) -> Any:
        """The log-probabilities a call returned (as the API sent them: {"content": [{"token",
        "logprob", "top_logprobs"}, ...]}), from its response or, when large, its artifact;
        None when it has none."""
        call = self.session.get(RawCall, call_id)
        response = call.response_json if call is not None else None
        if not isinstance(response, Mapping):
            return None
        if response.get("logprobs") is not None:
            return response["logprobs"]
        if response.get("logprobs_artifact") is None:
            return None
        artifacts = self.call_artifacts(call_id, LOGPROBS_ARTIFACT)
        if not artifacts:
            raise LookupError(f"raw_call {call_id}: its logprobs artifact is missing")
        return json.loads(artifact_payload(artifacts[0]))
