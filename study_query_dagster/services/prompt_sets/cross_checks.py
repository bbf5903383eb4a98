"""Checks that span the items of a prompt set (duplicate prompt ids, target labels and targets;
`vars` prompts against the template), shared by the model and the loader."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..request_identity import canonical_json
from . import scripting
from .errors import Loc
from .templates import render_template, template_fields

if TYPE_CHECKING:
    from .models import Prompt, Target


def cross_check(
    template: str | None,
    prompts: Iterable[tuple[int, Prompt]],
    targets: Iterable[tuple[int, Target]],
    samples: int | None = None,
) -> list[tuple[Loc, str]]:
    """Checks that span items: duplicates, template variables, and scripted offline answers
    against the prompt ids and `samples` (when known). Takes (index, item) pairs so the loader
    can run it on the items that validated when others did not."""
    issues: list[tuple[Loc, str]] = []
    prompts = list(prompts)
    # value -> index of the first item with it; setdefault returns that index for a repeat.
    first_id: dict[str, int] = {}
    for i, prompt in prompts:
        earlier = first_id.setdefault(prompt.id, i)
        if earlier != i:
            message = f"duplicate id {prompt.id!r} (first used by prompts[{earlier}])"
            issues.append((("prompts", i, "id"), message))
        problem = _vars_problem(template, prompt)
        if problem:
            issues.append((("prompts", i, "vars"), problem))

    targets = list(targets)
    first_label: dict[str, int] = {}
    for i, target in targets:
        if target.label is None:
            continue
        earlier = first_label.setdefault(target.label, i)
        if earlier != i:
            message = f"duplicate label {target.label!r} (first used by targets[{earlier}])"
            issues.append((("targets", i, "label"), message))
    if samples is not None:
        ids = [prompt.id for _, prompt in prompts]
        for i, target in targets:
            where = ("targets", i, "params", scripting.PARAM)
            issues += scripting.script_problems(target.params.offline_answers, ids, samples, where)
    first_target: dict[str, int] = {}
    for i, target in targets:
        fingerprint = canonical_json(target.model_dump(exclude={"label"}))
        earlier = first_target.setdefault(fingerprint, i)
        if earlier != i:
            message = (
                f"same provider, model and params as targets[{earlier}]; raise 'samples' to call"
                " it more often"
            )
            issues.append((("targets", i), message))
    return issues


def _vars_problem(template: str | None, prompt: Prompt) -> str | None:
    """What is wrong with a `vars` prompt against the set's template, if anything."""
    if prompt.vars is None:
        return None
    if template is None:
        return f"prompt {prompt.id!r} gives vars but the set has no 'template'"
    try:
        wanted = template_fields(template)
    except ValueError:
        return None  # reported on the template itself
    missing = [name for name in wanted if name not in prompt.vars]
    if missing:
        names = ", ".join(repr(m) for m in missing)
        plural = "s" if len(missing) > 1 else ""
        return f"prompt {prompt.id!r} is missing template variable{plural} {names}"
    try:
        render_template(template, prompt.vars)
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        return f"prompt {prompt.id!r}: template does not render: {exc}"
    return None
