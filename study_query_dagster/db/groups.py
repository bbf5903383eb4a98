"""`GroupRepository`: the mutable grouping of calls (`groups`, `group_members`): prompt sets,
runs, batches, conversations, semantic clusters... with positions and roles."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import flag_modified

from ..log import get_logger
from .dialect import CHUNK_SIZE, Repository, insert_ignore
from .models_v2 import Group, GroupMember

logger = get_logger(__name__)


def _group_row(
    group_type: str, name: str, description: str | None, metadata_json: dict | None
) -> dict[str, Any]:
    if not group_type or not name:
        raise ValueError(f"a group needs a type and a name (got {group_type!r}, {name!r})")
    return {
        "group_type": group_type,
        "name": name,
        "description": description,
        "metadata_json": metadata_json,
    }


class GroupRepository(Repository):
    """Group operations within one session (the caller owns the transaction)."""

    def create_group(
        self,
        group_type: str,
        name: str,
        description: str | None = None,
        metadata_json: dict | None = None,
    ) -> int:
        group = Group(**_group_row(group_type, name, description, metadata_json))
        self.session.add(group)
        self.session.flush()
        logger.info("created group id=%s type=%s name=%s", group.id, group_type, name)
        return group.id

    def get_or_create_group(
        self,
        group_type: str,
        name: str,
        description: str | None = None,
        metadata_json: dict | None = None,
    ) -> int:
        """The id of group (type, name), created if missing. Safe against concurrent callers."""
        stmt = insert_ignore(self.session, Group, ["group_type", "name"]).values(
            **_group_row(group_type, name, description, metadata_json)
        )
        self.session.execute(stmt)
        return self.session.execute(
            select(Group.id).where(Group.group_type == group_type, Group.name == name)
        ).scalar_one()

    def get_group(self, group_id: int) -> Group | None:
        return self.session.get(Group, group_id)

    def find_group(self, group_type: str, name: str) -> Group | None:
        return self.session.scalars(
            select(Group).where(Group.group_type == group_type, Group.name == name)
        ).one_or_none()

    def add_group_members(
        self,
        group_id: int,
        members: Iterable[int | Mapping[str, Any]],
        role: str | None = None,
    ) -> int:
        """Add calls to a group; calls already in it are ignored. Members are call ids or dicts
        with call_id and optional position/role; missing positions continue after the last one.
        Returns how many were added."""
        items = [{"call_id": m} if isinstance(m, int) else dict(m) for m in members]
        present = self._member_call_ids(group_id, [i["call_id"] for i in items])
        next_position = (
            self.session.scalar(
                select(func.max(GroupMember.position)).where(GroupMember.group_id == group_id)
            )
            or 0
        ) + 1
        rows = []
        for item in items:
            if item["call_id"] in present:
                continue
            present.add(item["call_id"])
            if item.get("position") is None:
                item["position"] = next_position
                next_position += 1
            item.setdefault("role", role)
            rows.append({"group_id": group_id, **item})
        if not rows:
            return 0
        # Insert-or-ignore still guards against a concurrent writer adding the same call.
        stmt = insert_ignore(self.session, GroupMember, ["group_id", "call_id"])
        if self.dialect == "sqlite":
            # With RETURNING, SQLAlchemy sends many rows per INSERT (insertmanyvalues) instead
            # of an executemany, which releases and retakes the GIL once per row.
            stmt = stmt.returning(GroupMember.__table__.c.id)
        for start in range(0, len(rows), CHUNK_SIZE):
            self.session.connection().execute(stmt, rows[start : start + CHUNK_SIZE]).close()
        return len(rows)

    def _member_call_ids(self, group_id: int, call_ids: list[int]) -> set[int]:
        present: set[int] = set()
        for start in range(0, len(call_ids), CHUNK_SIZE):
            stmt = select(GroupMember.call_id).where(
                GroupMember.group_id == group_id,
                GroupMember.call_id.in_(call_ids[start : start + CHUNK_SIZE]),
            )
            present.update(self.session.scalars(stmt))
        return present

    def get_group_members(self, group_id: int) -> list[GroupMember]:
        """Members (with `.call` loaded), ordered by position."""
        stmt = (
            select(GroupMember)
            .where(GroupMember.group_id == group_id)
            .order_by(GroupMember.position, GroupMember.id)
        )
        return list(self.session.scalars(stmt))

    def max_position(self, group_id: int) -> int:
        """The highest member position in the group (0 when empty)."""
        stmt = select(func.max(GroupMember.position)).where(GroupMember.group_id == group_id)
        return self.session.scalar(stmt) or 0

    def newest_group(
        self, group_type: str, name_prefix: str, *, before_id: int | None = None
    ) -> Group | None:
        """The most recently created group of this type whose name starts with the prefix
        (with `before_id`, the newest created before that group)."""
        stmt = select(Group).where(
            Group.group_type == group_type, Group.name.startswith(name_prefix, autoescape=True)
        )
        if before_id is not None:
            stmt = stmt.where(Group.id < before_id)
        return self.session.scalars(stmt.order_by(Group.id.desc()).limit(1)).first()

    def count_groups(self, group_type: str, name_prefix: str) -> int:
        """How many groups of this type have a name starting with the prefix."""
        stmt = select(func.count()).where(
            Group.group_type == group_type, Group.name.startswith(name_prefix, autoescape=True)
        )
        return self.session.scalar(stmt) or 0

    def update_group(
        self, group_id: int, *, description: str | None = None, metadata_json: dict | None = None
    ) -> Group:
        """Replace a group's description and/or metadata (groups are mutable; calls are not)."""
        group = self.session.get(Group, group_id)
        if group is None:
            raise ValueError(f"group_id {group_id} does not exist")
        if description is not None:
            group.description = description
        if metadata_json is not None:
            group.metadata_json = metadata_json
            flag_modified(group, "metadata_json")
        self.session.flush()
        return group
