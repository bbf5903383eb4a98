"""Prompt templates: the `{name}` placeholders a set's `template` may use, and rendering a `vars`
prompt with them (str.format syntax, restricted to plain names)."""

from __future__ import annotations

import re
import string
from typing import Any

_PLACEHOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def template_fields(template: str) -> list[str]:
    """The `{name}` placeholders of a template (str.format syntax, `{{`/`}}` are literal braces).
    Raises ValueError for malformed braces and for anything but plain names."""
    names: list[str] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"{exc}; write '{{{{' or '}}}}' for a literal brace") from None
    for _literal, name, spec, _conversion in parsed:
        if name is None:
            continue
        if not _PLACEHOLDER.match(name):
            raise ValueError(
                f"placeholder {{{name}}} must be a plain name such as {{country}}"
                " (no positions, attributes or indexes); write '{{' or '}}' for a literal brace"
            )
        if spec and ("{" in spec):
            raise ValueError(
                f"placeholder {{{name}}} must not nest placeholders in its format spec"
            )
        if name not in names:
            names.append(name)
    return names


def render_template(template: str, variables: dict[str, Any]) -> str:
    """Render with str.format semantics; a missing variable raises KeyError naming it."""
    template_fields(template)  # refuses attribute/index access before formatting
    return template.format_map(variables)
