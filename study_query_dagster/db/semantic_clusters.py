"""`SemanticClusterRepository`: equivalence classes of answers stored as `semantic_cluster`
groups. One group per class of a cell (run, prompt, target) and strategy; its members are the
calls, the medoid with role `representative`; its metadata names the cell, the strategy and
its settings.

Group name: `{run group id}/{prompt id}/{target}/{strategy key}/{class}` (prompt ids and
target labels hold no "/", and the whole stays under 255 characters). Recomputing a run
replaces the classes that changed and leaves identical ones (and their ids) alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from .dialect import CHUNK_SIZE, Repository
from .models_v2 import Group, GroupMember

SEMANTIC_CLUSTER = "semantic_cluster"
REPRESENTATIVE = "representative"


def cluster_name(run_group_id: int, prompt_id: str, target: str, strategy_key: str, label: int):
    return f"{run_group_id}/{prompt_id}/{target}/{strategy_key}/{label}"


@dataclass(frozen=True)
class ClusterSpec:
    """One class of a cell: its calls (in sample order) and the medoid's call id."""

    label: int
    call_ids: tuple[int, ...]
    representative: int
    metadata: dict[str, Any]


@dataclass
class StoredCluster:
    group_id: int
    name: str
    metadata: dict[str, Any]
    call_ids: list[int] = field(default_factory=list)
    representative: int | None = None

    @property
    def strategy_key(self) -> str:
        return self.name.split("/")[3]

    def same_as(self, spec: ClusterSpec) -> bool:
        return (
            self.call_ids == list(spec.call_ids)
            and self.representative == spec.representative
            and self.metadata == spec.metadata
        )


def stored_clusters(session: Session, group_type: str, prefix: str) -> list[StoredCluster]:
    """The groups of `group_type` named `{prefix}/...`, in id order, with their members in
    position order and the representative marked."""
    stmt = (
        select(Group.id, Group.name, Group.metadata_json, GroupMember.call_id, GroupMember.role)
        .outerjoin(GroupMember, GroupMember.group_id == Group.id)
        .where(Group.group_type == group_type, Group.name.startswith(f"{prefix}/", autoescape=True))
        .order_by(Group.id, GroupMember.position, GroupMember.id)
    )
    clusters: dict[int, StoredCluster] = {}
    for group_id, name, metadata, call_id, role in session.execute(stmt):
        cluster = clusters.setdefault(group_id, StoredCluster(group_id, name, metadata or {}))
        if call_id is not None:
            cluster.call_ids.append(call_id)
            if role == REPRESENTATIVE:
                cluster.representative = call_id
    return list(clusters.values())


class SemanticClusterRepository(Repository):
    def clusters_of_run(self, run_group_id: int, strategy_key: str | None = None):
        """The stored classes of a run (every cell), optionally of one strategy key, with
        their members in position order."""
        found = stored_clusters(self.session, SEMANTIC_CLUSTER, str(run_group_id))
        if strategy_key is not None:
            found = [c for c in found if c.strategy_key == strategy_key]
        return found

    def replace_run_clusters(
        self,
        run_group_id: int,
        strategy_key: str,
        cells: Mapping[tuple[str, str], Sequence[ClusterSpec]],
    ) -> dict[str, int]:
        """Make the stored classes of these cells (prompt id, target) exactly `cells`:
        unchanged classes stay, changed or vanished ones are deleted, new ones created.
        Returns counts of kept, removed and created groups."""
        wanted = {
            cluster_name(run_group_id, prompt_id, target, strategy_key, spec.label): spec
            for (prompt_id, target), specs in cells.items()
            for spec in specs
        }
        prefixes = tuple(f"{run_group_id}/{p}/{t}/{strategy_key}/" for p, t in cells)
        existing = [
            c
            for c in self.clusters_of_run(run_group_id, strategy_key)
            if c.name.startswith(prefixes)
        ]
        keep = {c.name for c in existing if c.name in wanted and c.same_as(wanted[c.name])}
        stale = [c.group_id for c in existing if c.name not in keep]
        for start in range(0, len(stale), CHUNK_SIZE):
            chunk = stale[start : start + CHUNK_SIZE]
            self.session.execute(delete(GroupMember).where(GroupMember.group_id.in_(chunk)))
            self.session.execute(delete(Group).where(Group.id.in_(chunk)))
        create = [(name, spec) for name, spec in wanted.items() if name not in keep]
        self._create(create)
        return {"kept": len(keep), "removed": len(stale), "created": len(create)}

    def _create(self, clusters: list[tuple[str, ClusterSpec]]) -> None:
        for start in range(0, len(clusters), CHUNK_SIZE):
            chunk = clusters[start : start + CHUNK_SIZE]
            rows = [
                {
                    "group_type": SEMANTIC_CLUSTER,
                    "name": name,
                    "metadata_json": spec.metadata,
                    "description": f"answer class {spec.label} ({len(spec.call_ids)} answers)",
                }
                for name, spec in chunk
            ]
            stmt = insert(Group).returning(Group.id, Group.name)
            ids = {name: group_id for group_id, name in self.session.execute(stmt, rows)}
            members = [
                {
                    "group_id": ids[name],
                    "call_id": call_id,
                    "position": position,
                    "role": REPRESENTATIVE if call_id == spec.representative else None,
                }
                for name, spec in chunk
                for position, call_id in enumerate(spec.call_ids, start=1)
            ]
            for member_start in range(0, len(members), CHUNK_SIZE):
                self.session.execute(
                    insert(GroupMember), members[member_start : member_start + CHUNK_SIZE]
                )
