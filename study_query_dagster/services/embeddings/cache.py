"""The embedding cache: an in-process LRU in front of `embedding_vectors`, read with one query
per chunk of hashes (never one per item)."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Sequence

from ...db import DatabaseConnection, VectorStore
from ..retry import RetryPolicy
from .models import CacheEntry
from .retrying import with_db_retry


class LRU:
    def __init__(self, size: int):
        self.size = size
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()

    def get(self, key: str) -> CacheEntry | None:
        entry = self._data.get(key)
        if entry is not None:
            self._data.move_to_end(key)
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        if self.size <= 0:
            return
        self._data[key] = entry
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class EmbeddingCache:
    """Stored embeddings by request hash: the LRU first, then the database."""

    def __init__(self, db: DatabaseConnection, retry: RetryPolicy, size: int):
        self.db = db
        self.retry = retry
        self.lru = LRU(size)
        self.stats = {"lru_hits": 0, "db_hits": 0}

    def from_lru(self, hashes: Sequence[str]) -> tuple[dict[str, CacheEntry], list[str]]:
        """(entries the LRU holds, the other hashes), each hash once."""
        found: dict[str, CacheEntry] = {}
        missing: list[str] = []
        get = self.lru.get
        for request_hash in dict.fromkeys(hashes):
            entry = get(request_hash)
            if entry is not None:
                found[request_hash] = entry
            else:
                missing.append(request_hash)
        self.stats["lru_hits"] += len(found)
        return found, missing

    async def from_db(self, hashes: Sequence[str]) -> dict[str, CacheEntry]:
        """The entries stored for these hashes (absent ones left out), now also in the LRU.
        Raises when the database stays unreachable through the retries."""
        if not hashes:
            return {}
        stored = await asyncio.to_thread(with_db_retry, self.retry, self._read, hashes)
        self.stats["db_hits"] += len(stored)
        self.remember(stored)
        return stored

    def remember(self, entries: dict[str, CacheEntry]) -> None:
        for request_hash, entry in entries.items():
            self.lru.put(request_hash, entry)

    def _read(self, hashes: Sequence[str]) -> dict[str, CacheEntry]:
        with self.db.session_scope() as session:
            rows = VectorStore(session).embeddings_by_hash(hashes)
            return {h: CacheEntry.of(row) for h, row in rows.items()}
