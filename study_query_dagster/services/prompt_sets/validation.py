"""Validating parsed prompt set data: runs the pydantic models and the cross-item checks, and
turns every failure into a `PromptSetProblem` at its line in the node tree, worded for a
researcher (unknown fields with a did-you-mean, the offending value shown)."""

from __future__ import annotations

import contextlib
import difflib
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from .cross_checks import cross_check
from .errors import FieldError, Loc, PromptSetError, PromptSetProblem, format_loc
from .models import (
    DEFER_CROSS_CHECKS,
    ChatMessage,
    EmbedConfig,
    Prompt,
    PromptSet,
    Target,
    TargetParams,
)
from .parsing import locate
from .variation import ClusterConfig, ModelParams, ModelTarget, VariationConfig


def validate(data: Any, root: yaml.Node | None, source: str) -> PromptSet:
    """The `PromptSet` in `data`, or a PromptSetError listing every problem in file order, each
    at its line in `root` (the node tree `data` was built from)."""

    def problem(loc: Loc, message: str) -> PromptSetProblem:
        line, column = locate(root, loc)
        return PromptSetProblem(source, line, format_loc(loc), message, column)

    if data is None:
        message = "the file is empty; a prompt set needs name, prompts and targets"
        raise PromptSetError([PromptSetProblem(source, 1, "", message)])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        message = f"a prompt set must be a mapping with name, prompts and targets (got {kind})"
        raise PromptSetError([problem((), message)])

    problems: list[PromptSetProblem] = []
    prompt_set: PromptSet | None = None
    try:
        prompt_set = PromptSet.model_validate(data, context={DEFER_CROSS_CHECKS: True})
    except ValidationError as exc:
        problems.extend(problem(loc, msg) for loc, msg in _explain(exc.errors(), PromptSet))

    if prompt_set is not None:
        template = prompt_set.template
        prompts: list[tuple[int, Prompt]] = list(enumerate(prompt_set.prompts))
        targets: list[tuple[int, Target]] = list(enumerate(prompt_set.targets))
    else:  # cross-check the items that are valid on their own, so all problems show at once
        raw = data.get("template")
        # A template of the wrong type is already reported; "" keeps vars prompts from being
        # blamed for it as well.
        template = raw if isinstance(raw, str) else (None if raw is None else "")
        prompts = _valid_items(data.get("prompts"), Prompt)
        targets = _valid_items(data.get("targets"), Target)
    samples = prompt_set.samples if prompt_set is not None else data.get("samples")
    if not isinstance(samples, int) or isinstance(samples, bool):
        samples = None  # a wrong `samples` is already reported; quotas cannot be checked
    issues = cross_check(template, prompts, targets, samples)
    problems.extend(problem(loc, msg) for loc, msg in issues)

    if problems:
        problems.sort(key=lambda p: (p.line or 0, p.column or 0, p.field))
        raise PromptSetError(problems)
    assert prompt_set is not None
    return prompt_set


def _valid_items(raw: Any, model: type[BaseModel]) -> list[tuple[int, Any]]:
    if not isinstance(raw, list):
        return []
    items = []
    for i, value in enumerate(raw):
        with contextlib.suppress(ValidationError):
            items.append((i, model.model_validate(value)))
    return items


def _explain(errors: list[dict[str, Any]], model: type[BaseModel]) -> list[tuple[Loc, str]]:
    """Pydantic errors as (location, message) in a researcher's words."""
    out: list[tuple[Loc, str]] = []
    for err in errors:
        loc: Loc = tuple(err["loc"])
        kind, message = err["type"], err["msg"]
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, FieldError):
            loc = (*loc, *_split_field(cause.field))
            message = cause.message
        elif kind == "value_error":
            message = message.removeprefix("Value error, ")
        elif kind == "missing":
            message = "required field is missing"
        elif kind == "extra_forbidden":
            message = _unknown_field(loc, model)
        else:
            value = err.get("input")
            if isinstance(value, (str, int, float, bool)) or value is None:
                shown = repr(value) if len(repr(value)) <= 60 else repr(value)[:57] + "...'"
                message = f"{message} (got {shown})"
        out.append((loc, message))
    return out


def _split_field(field_path: str) -> Loc:
    return tuple(int(p) if p.isdigit() else p for p in field_path.split(".") if p)


def _unknown_field(loc: Loc, model: type[BaseModel]) -> str:
    """'unknown field …; allowed: …' with a did-you-mean, naming the fields of the model at loc."""
    name = str(loc[-1])
    owner = _model_at(model, loc[:-1])
    allowed = sorted(owner.model_fields) if owner else []
    what = "parameter" if owner is TargetParams else "field"
    hint = difflib.get_close_matches(name, allowed, n=1)
    did_you_mean = f" (did you mean {hint[0]!r}?)" if hint else ""
    return f"unknown {what} {name!r}{did_you_mean}; allowed: {', '.join(allowed)}"


def _model_at(model: type[BaseModel], loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the value at `loc` (list indexes skipped)."""
    nested = {
        (PromptSet, "prompts"): Prompt,
        (PromptSet, "targets"): Target,
        (PromptSet, "embed"): EmbedConfig,
        (Prompt, "messages"): ChatMessage,
        (Target, "params"): TargetParams,
        (PromptSet, "variation"): VariationConfig,
        (VariationConfig, "judge"): ModelTarget,
        (VariationConfig, "clusters"): ClusterConfig,
        (ClusterConfig, "summary"): ModelTarget,
        (ModelTarget, "params"): ModelParams,
    }
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        current = nested.get((current, part))
    return current
