"""`AnswerClusterRepository`: clusters of a run's answers in embedding space (`answer_clusters`)
stored as groups, and the runs a clustering window takes its answers from.

One `answer_clustering` group per run and clustering key, named `{run group id}/{key}`, whose
metadata holds the method, version, parameters and the numbers (K, silhouette, sweep,
stability); one `answer_cluster` group per cluster, `{run group id}/{key}/{label}`, whose
members are the answers' calls (the one nearest the centroid with role `representative`) and
whose metadata names its size, targets, representative answer and summary. Recomputing a run's
clustering replaces its groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import delete, insert, or_, select

from .dialect import CHUNK_SIZE, Repository
from .models_v2 import Group, GroupMember
from .semantic_clusters import REPRESENTATIVE, ClusterSpec, StoredCluster, stored_clusters

ANSWER_CLUSTERING = "answer_clustering"
ANSWER_CLUSTER = "answer_cluster"


def clustering_name(run_group_id: int, key: str) -> str:
    return f"{run_group_id}/{key}"


class AnswerClusterRepository(Repository):
    def window_runs(
        self, run_group_type: str, prompt_set: str, run_group_id: int, size: int
    ) -> list[Group]:
        """The `size` newest runs of the prompt set up to this run (included), oldest first."""
        stmt = (
            select(Group)
            .where(
                Group.group_type == run_group_type,
                Group.name.startswith(f"{prompt_set}/", autoescape=True),
                Group.id <= run_group_id,
            )
            .order_by(Group.id.desc())
            .limit(size)
        )
        return list(reversed(self.session.scalars(stmt).all()))

    def replace(
        self,
        run_group_id: int,
        key: str,
        metadata: Mapping[str, Any],
        clusters: Sequence[ClusterSpec],
    ) -> int:
        """Store this clustering of the run (replacing an earlier one of the same key);
        returns the `answer_clustering` group's id."""
        name = clustering_name(run_group_id, key)
        old = select(Group.id).where(
            or_(
                (Group.group_type == ANSWER_CLUSTERING) & (Group.name == name),
                (Group.group_type == ANSWER_CLUSTER)
                & Group.name.startswith(f"{name}/", autoescape=True),
            )
        )
        stale = list(self.session.scalars(old))
        for start in range(0, len(stale), CHUNK_SIZE):
            chunk = stale[start : start + CHUNK_SIZE]
            self.session.execute(delete(GroupMember).where(GroupMember.group_id.in_(chunk)))
            self.session.execute(delete(Group).where(Group.id.in_(chunk)))
        parent = self.session.execute(
            insert(Group).returning(Group.id),
            {
                "group_type": ANSWER_CLUSTERING,
                "name": name,
                "metadata_json": dict(metadata),
                "description": f"{len(clusters)} clusters of the run's answers ({key})",
            },
        ).scalar_one()
        for start in range(0, len(clusters), CHUNK_SIZE):
            chunk = clusters[start : start + CHUNK_SIZE]
            rows = [
                {
                    "group_type": ANSWER_CLUSTER,
                    "name": f"{name}/{spec.label}",
                    "metadata_json": spec.metadata,
                    "description": f"answer cluster {spec.label} ({len(spec.call_ids)} answers)",
                }
                for spec in chunk
            ]
            ids = dict(
                (n, i)
                for i, n in self.session.execute(
                    insert(Group).returning(Group.id, Group.name), rows
                )
            )
            members = [
                {
                    "group_id": ids[f"{name}/{spec.label}"],
                    "call_id": call_id,
                    "position": position,
                    "role": REPRESENTATIVE if call_id == spec.representative else None,
                }
                for spec in chunk
                for position, call_id in enumerate(spec.call_ids, start=1)
            ]
            for at in range(0, len(members), CHUNK_SIZE):
                self.session.execute(insert(GroupMember), members[at : at + CHUNK_SIZE])
        return parent

    def clustering(
        self, run_group_id: int, key: str
    ) -> tuple[dict[str, Any] | None, list[StoredCluster]]:
        """(the clustering's metadata, its clusters with members in position order); (None, [])
        when the run has no clustering of this key."""
        name = clustering_name(run_group_id, key)
        parent = self.session.scalars(
            select(Group).where(Group.group_type == ANSWER_CLUSTERING, Group.name == name)
        ).one_or_none()
        if parent is None:
            return None, []
        found = stored_clusters(self.session, ANSWER_CLUSTER, name)
        found.sort(key=lambda c: c.metadata.get("label", 0))
        return dict(parent.metadata_json or {}), found
