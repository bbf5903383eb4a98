"""What the prompt set sensor decides on each look at the folder, free of Dagster.

It remembers (in the sensor's cursor) the content hash of every set it has seen valid, which
files are broken and how, which partitions exist only to show a broken file, and how many
runs it requested per set. From that and the folder as it is now:

- a new or changed valid set gets a run (an unchanged one never does);
- a broken file is reported once per change of the file: one log line per problem, and a run
  of its set that fails at `prompt_set` with every problem's file and line, so the set's
  partition turns red where users look (a partition is added for a set that never was valid,
  and removed when the file goes);
- a set whose file becomes valid again gets a new run when its latest run failed (or it never
  ran) — even if the fixed file equals a version that ran before, which a run key made of name
  and hash alone would have suppressed.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


@dataclass
class FolderState:
    valid: dict[str, str] = field(default_factory=dict)  # set -> content hash it last had valid
    invalid: dict[str, dict[str, Any]] = field(default_factory=dict)  # path -> digest, name
    added: list[str] = field(default_factory=list)  # partitions that exist for a broken file
    requests: dict[str, int] = field(default_factory=dict)  # set -> runs requested so far

    @classmethod
    def from_cursor(cls, cursor: str | None) -> FolderState:
        data = json.loads(cursor) if cursor else {}
        if data and "valid" not in data:  # the first cursor format: {set: content hash}
            return cls(valid=dict(data))
        return cls(
            valid=dict(data.get("valid", {})),
            invalid=dict(data.get("invalid", {})),
            added=list(data.get("added", [])),
            requests=dict(data.get("requests", {})),
        )

    def to_cursor(self) -> str:
        return json.dumps(
            {
                "valid": self.valid,
                "invalid": self.invalid,
                "added": sorted(self.added),
                "requests": self.requests,
            },
            sort_keys=True,
        )


@dataclass(frozen=True)
class BrokenFile:
    path: str
    name: str | None  # the set it declares (or its file stem), None when neither is a name
    digest: str  # of the file's bytes: a change of the file is a new report
    problems: list[str]  # one "file:line: field: message" per problem


@dataclass(frozen=True)
class RunToRequest:
    name: str
    content_hash: str
    run_key: str
    reason: str  # "new" | "changed" | "fixed after a failed run" | "invalid file"


@dataclass
class Decision:
    runs: list[RunToRequest] = field(default_factory=list)
    add_partitions: list[str] = field(default_factory=list)
    delete_partitions: list[str] = field(default_factory=list)
    newly_broken: list[BrokenFile] = field(default_factory=list)  # report these now
    fixed: list[str] = field(default_factory=list)  # sets whose file is valid again
    still_broken: list[BrokenFile] = field(default_factory=list)  # reported before
    state: FolderState = field(default_factory=FolderState)

    @property
    def broken(self) -> list[BrokenFile]:
        return self.newly_broken + self.still_broken


def declared_name(path: str | Path) -> str | None:
    """The set a broken file means: its `name:` when that can be read and is a valid name,
    else its file stem when that is one, else None."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        data = None
    name = data.get("name") if isinstance(data, dict) else None
    if isinstance(name, str) and _SLUG.match(name):
        return name
    return path.stem if _SLUG.match(path.stem) else None


def file_digest(path: str | Path) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def broken_file(path: str, problems: list[str]) -> BrokenFile:
    return BrokenFile(path, declared_name(path), file_digest(path), problems)


def decide(
    state: FolderState,
    valid: Mapping[str, str],
    broken: list[BrokenFile],
    partitions: set[str],
    latest_run_failed: Callable[[str], bool],
) -> Decision:
    """What to do now. `valid` maps each valid set to its content hash; `partitions` are the
    registered sets; `latest_run_failed(name)` says whether the set's latest run failed or it
    never ran."""
    decision = Decision()
    new = FolderState(requests=dict(state.requests))
    was_broken = {entry.get("name") for entry in state.invalid.values()} - {None}

    for item in broken:
        before = state.invalid.get(item.path)
        new.invalid[item.path] = {"digest": item.digest, "name": item.name}
        if before is None or before.get("digest") != item.digest:
            decision.newly_broken.append(item)
            if item.name and item.name not in valid:
                # fails at prompt_set with the file's problems: the partition shows red
                run_key = f"{item.name}:invalid:{item.digest[:16]}"
                decision.runs.append(RunToRequest(item.name, "", run_key, "invalid file"))
        else:
            decision.still_broken.append(item)
        if item.name and item.name not in valid and item.name not in partitions:
            decision.add_partitions.append(item.name)
            partitions = partitions | {item.name}
            new.added.append(item.name)
    broken_names = {b.name for b in broken} - {None}
    for name in state.added:
        if name in valid or name in new.added:
            continue
        if name in broken_names:
            new.added.append(name)
        else:
            decision.delete_partitions.append(name)  # its broken file went away
    # Every set keeps the hash it last had when valid, also while its file is broken or gone:
    # a file restored unchanged is not run again.
    new.valid = dict(state.valid)

    for name, content_hash in sorted(valid.items()):
        new.valid[name] = content_hash
        if name not in partitions:
            decision.add_partitions.append(name)
        seen = state.valid.get(name)
        if name in was_broken and name not in broken_names:
            decision.fixed.append(name)
        if seen != content_hash:
            reason = "new" if seen is None else "changed"
        elif name in decision.fixed and latest_run_failed(name):
            reason = "fixed after a failed run"
        else:
            continue
        count = new.requests.get(name, 0) + 1
        new.requests[name] = count
        # Unique per request, so a version that ran before runs again when asked; the cursor,
        # not the run key, is what keeps an unchanged file from running twice.
        run_key = f"{name}:{content_hash}:{count}"
        decision.runs.append(RunToRequest(name, content_hash, run_key, reason))
    decision.state = new
    return decision
