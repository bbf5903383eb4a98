"""Checks that span the items of a prompt set (duplicate prompt ids, target labels and targets;
`vars` prompts against the template), shared by the model and the loader."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..request_identity import canonical_json
from .errors import Loc
from .templates import render_template, template_fields

if TYPE_CHECKING:
    from .models import Prompt, Target


def cross_check(
    template: str | None,
    prompts: Iterable[tuple[int, Prompt]],
    targets: Iterable[tuple[int, Target]],
) -> list[tuple[Loc, str]]:
    """Checks that span items: duplicates, and template variables. Takes (index, item) pairs so
    the loader can run it on the items that validated when others did not."""
    issues: list[tuple[Loc, str]] = []
    first_id: dict[str, int] = {}
    for i, prompt in prompts:
        if prompt.id in first_id:
            issues.append(
                (
                    ("prompts", i, "id"),
                    f"duplicate id {prompt.id!r} (first used by prompts[{first_id[prompt.id]}])",
                )
            )
        else:
            first_id[prompt.id] = i
        if prompt.vars is None:
            continue
        if template is None:
            issues.append(
                (
                    ("prompts", i, "vars"),
                    f"prompt {prompt.id!r} gives vars but the set has no 'template'",
                )
            )
            continue
        try:
            wanted = template_fields(template)
        except ValueError:
            continue  # reported on the template itself
        missing = [name for name in wanted if name not in prompt.vars]
        if missing:
            names = ", ".join(repr(m) for m in missing)
            issues.append(
                (
                    ("prompts", i, "vars"),
                    f"prompt {prompt.id!r} is missing template variable{'s' if len(missing) > 1 else ''} {names}",
                )
            )
            continue
        try:
            render_template(template, prompt.vars)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            issues.append(
                (("prompts", i, "vars"), f"prompt {prompt.id!r}: template does not render: {exc}")
            )

    targets = list(targets)
    first_label: dict[str, int] = {}
    for i, target in targets:
        if target.label is None:
            continue
        if target.label in first_label:
            issues.append(
                (
                    ("targets", i, "label"),
                    f"duplicate label {target.label!r} (first used by targets[{first_label[target.label]}])",
                )
            )
        else:
            first_label[target.label] = i
    seen: dict[str, int] = {}
    for i, target in targets:
        same = target.model_dump(exclude={"label"})
        fingerprint = canonical_json(same)
        if fingerprint in seen:
            issues.append(
                (
                    ("targets", i),
                    f"same provider, model and params as targets[{seen[fingerprint]}]; raise"
                    " 'samples' to call it more often",
                )
            )
        else:
            seen[fingerprint] = i
    return issues
