"""Prompt sets: the file format, its validation, expansion into work items, and cost bounds.

A prompt set file (YAML or JSON) names prompts, the provider/model targets to send them to, and
how many samples to take of each. This package turns a file into a validated `PromptSet`, or a
`PromptSetError` that lists every problem in the file with its line and field
(`prompt_sets/capitals.yaml:14: prompts[2].id: duplicate id 'q1'`), so a researcher fixes a file
in one pass and nothing is sent to a paid API before the whole file is valid.

No Dagster here: the `prompt_set` asset and the folder sensor call `load_prompt_set` /
`discover_prompt_sets` and report `expected_calls`, `estimate_max_cost` and `preview_markdown`.
"""

from .cost import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    CostEstimate,
    TargetCost,
    estimate_max_cost,
    max_prompt_tokens,
)
from .discovery import SUFFIXES, discover_prompt_sets
from .errors import FieldError, Loc, PromptSetError, PromptSetProblem
from .loader import LoadedPromptSet, load_prompt_set, parse_prompt_set
from .models import (
    ALLOWED_PARAMS,
    EMBED_PROVIDERS,
    MAX_SAMPLES,
    MAX_STOP_SEQUENCES,
    PROVIDERS,
    SCHEDULES,
    ChatMessage,
    EmbedConfig,
    EmbedProvider,
    Ident,
    NonEmptyStr,
    Prompt,
    PromptSet,
    Provider,
    Role,
    Scalar,
    Schedule,
    Slug,
    Target,
    TargetParams,
    WorkItem,
    content_hash,
    resolve_labels,
)
from .preview import preview_markdown, preview_rows
from .templates import render_template, template_fields

__all__ = [
    "ALLOWED_PARAMS",
    "EMBED_PROVIDERS",
    "MAX_SAMPLES",
    "MAX_STOP_SEQUENCES",
    "MESSAGE_OVERHEAD_TOKENS",
    "PROVIDERS",
    "REQUEST_OVERHEAD_TOKENS",
    "SCHEDULES",
    "SUFFIXES",
    "ChatMessage",
    "CostEstimate",
    "EmbedConfig",
    "EmbedProvider",
    "FieldError",
    "Ident",
    "LoadedPromptSet",
    "Loc",
    "NonEmptyStr",
    "Prompt",
    "PromptSet",
    "PromptSetError",
    "PromptSetProblem",
    "Provider",
    "Role",
    "Scalar",
    "Schedule",
    "Slug",
    "Target",
    "TargetCost",
    "TargetParams",
    "WorkItem",
    "content_hash",
    "discover_prompt_sets",
    "estimate_max_cost",
    "load_prompt_set",
    "max_prompt_tokens",
    "parse_prompt_set",
    "preview_markdown",
    "preview_rows",
    "render_template",
    "resolve_labels",
    "template_fields",
]
