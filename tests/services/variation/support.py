"""Helpers for the variation tests: a table embedder (known vectors for known texts) and
captured-call rows shaped as the runs service writes them."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class TableEmbedder:
    """An `Embedder` whose vectors are given per text: the clustering's geometry is then known
    exactly. (The embedding-strategy ordering test uses the real EmbeddingService instead.)"""

    def __init__(self, vectors: Mapping[str, Sequence[float]]):
        self.vectors = {t: np.asarray(v, dtype=np.float64) for t, v in vectors.items()}
        self.calls = 0

    def describe(self) -> dict[str, Any]:
        return {"embedder": "table", "model": "table-v1"}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls += 1
        return np.vstack([self.vectors[t] for t in texts])

    def request_hashes(self, texts: Sequence[str]) -> list[str | None]:
        return [hashlib.sha256(t.encode()).hexdigest() for t in texts]


def unit(angle: float) -> list[float]:
    return [float(np.cos(angle)), float(np.sin(angle))]


@dataclass
class FakeCall:
    """The fields of a RawCall that cells read (a plain object, as a query would return)."""

    id: int
    status: str
    response_json: dict | None = None
    error_json: dict | None = None
    metadata_json: dict | None = field(default_factory=dict)


def call(id_, prompt, target, sample, text=None, *, status="success", error=None, finish="stop"):
    return FakeCall(
        id=id_,
        status=status,
        response_json={"text": text, "finish_reason": finish} if status == "success" else None,
        error_json={"type": error} if error else None,
        metadata_json={"prompt_id": prompt, "target": target, "sample_index": sample},
    )


REFUSE = object()  # a scripted refusal (content filter)
FAIL = object()  # a scripted transient failure (rate limit, not retried to success)


def prompt_set_content(
    name="set",
    targets=("a", "b"),
    prompts=("capital",),
    samples=10,
    temperatures=None,
    variation=None,
    references=None,
    embed=False,
):
    """A prompt set's stored content (what a run group keeps); `references` maps prompt ids
    to their reference answers."""
    temperatures = temperatures or {}
    references = references or {}
    content = {
        "name": name,
        "prompts": [
            {"id": p, "text": f"Question {p}?"}
            | ({"reference": references[p]} if p in references else {})
            for p in prompts
        ],
        "targets": [
            {
                "provider": "offline",
                "model": "offline-echo",
                "label": t,
                "params": {"temperature": temperatures.get(t, 1.0)},
            }
            for t in targets
        ],
        "samples": samples,
    }
    if variation is not None:
        content["variation"] = variation
    if embed:
        content["embed"] = True
    return content


def make_run(db, run_name, content, answers):
    """A run group holding captured calls as the runs service writes them: `answers` maps
    (prompt id, target) to the answers by sample index (text, REFUSE or FAIL)."""
    from study_query_dagster.db import GroupRepository, RawCallRepository

    rows = []
    for (prompt_id, target), texts in answers.items():
        for sample, answer in enumerate(texts):
            meta = {
                "prompt_id": prompt_id,
                "target": target,
                "sample_index": sample,
                "item_key": f"{prompt_id}/{target}/{sample}",
            }
            row = {
                "provider": "offline",
                "model": "offline-echo",
                "metadata_json": meta,
                "request_json": {"messages": [], "sample_index": sample},
                "request_hash": f"{run_name}/{prompt_id}/{target}/{sample}",
            }
            if answer is REFUSE:
                row.update(status="failed", error_json={"type": "content_filter"})
            elif answer is FAIL:
                row.update(status="failed", error_json={"type": "rate_limit"})
            else:
                row.update(status="success", response_json={"text": answer})
            rows.append(row)
    with db.session_scope() as session:
        group_id = GroupRepository(session).create_group(
            "run", run_name, metadata_json={"prompt_set": content["name"], "content": content}
        )
        ids = RawCallRepository(session).insert_raw_calls(rows)
        GroupRepository(session).add_group_members(group_id, ids)
    return group_id


def split(*pairs):
    """("Canberra", 7), ("Sydney", 3) -> the ten answers in that order."""
    return [text for text, count in pairs for _ in range(count)]
