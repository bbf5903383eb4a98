"""Prompt sets: the file format, its validation, expansion into work items, and cost bounds.

A prompt set file (YAML or JSON) names prompts, the provider/model targets to send them to, and
how many samples to take of each. This module turns a file into a validated `PromptSet`, or a
`PromptSetError` that lists every problem in the file with its line and field
(`prompt_sets/capitals.yaml:14: prompts[2].id: duplicate id 'q1'`), so a researcher fixes a file
in one pass and nothing is sent to a paid API before the whole file is valid.

Line numbers come from PyYAML's node tree (`compose`), which is also used for JSON files: JSON
is YAML, so one mapping from pydantic error locations to nodes serves both formats.

No Dagster here: the `prompt_set` asset and the folder sensor call `load_prompt_set` /
`discover_prompt_sets` and report `expected_calls`, `estimate_max_cost` and `preview_markdown`.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import hashlib
import json
import re
import string
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ..log import get_logger
from .pricing import PriceTable, get_price_table

log = get_logger(__name__)

Provider = Literal["azure", "openai", "hyperbolic", "offline"]
EmbedProvider = Literal["azure", "openai", "offline"]
Schedule = Literal["none", "daily", "hourly"]
Role = Literal["system", "user", "assistant"]
PROVIDERS: tuple[str, ...] = get_args(Provider)
EMBED_PROVIDERS: tuple[str, ...] = get_args(EmbedProvider)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
SUFFIXES = (".yaml", ".yml", ".json")
MAX_SAMPLES = 100
MAX_STOP_SEQUENCES = 4

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Prompt ids and target labels form work-item keys `prompt/target/sample`, so no "/" or spaces.
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PLACEHOLDER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Token upper bound for prompts: byte-level BPE tokenizers (GPT, Llama 3) never emit more tokens
# than the UTF-8 bytes they encode; chat formatting adds a few special tokens per message (3-5
# in the OpenAI and Llama templates), for which these allowances are generous.
MESSAGE_OVERHEAD_TOKENS = 8
REQUEST_OVERHEAD_TOKENS = 8


# --- errors ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PromptSetProblem:
    """One problem in a prompt set file; `line` and `column` are 1-based (None if unknown)."""

    path: str
    line: int | None
    field: str
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = self.path if self.line is None else f"{self.path}:{self.line}"
        return (
            f"{where}: {self.field}: {self.message}" if self.field else f"{where}: {self.message}"
        )


class PromptSetError(ValueError):
    """A prompt set file is invalid. `problems` lists every problem found, in file order; `path`,
    `line`, `field` and `column` describe the first. The message has one line per problem."""

    def __init__(self, problems: Sequence[PromptSetProblem]):
        if not problems:
            raise ValueError("PromptSetError needs at least one problem")
        self.problems = list(problems)
        first = self.problems[0]
        self.path, self.line, self.column = first.path, first.line, first.column
        self.field = first.field
        super().__init__("\n".join(str(p) for p in self.problems))

    def __reduce__(self):  # picklable across Dagster process boundaries
        return (type(self), (self.problems,))


class FieldError(ValueError):
    """Raised by a model-level validator to blame one field of the model it validates."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# --- the model -------------------------------------------------------------------------------


def _check_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError(
            f"must be a slug of at most 64 lowercase letters, digits, '-' or '_', starting with a"
            f" letter or digit (got {value!r}); it is the Dagster partition key"
        )
    return value


def _check_ident(value: str) -> str:
    if not _IDENT.match(value):
        raise ValueError(
            f"may hold at most 100 letters, digits, '.', '-' or '_', starting with a letter or"
            f" digit (got {value!r}); it is part of each work item's key"
        )
    return value


def _check_scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"must be a string or a number (got {type(value).__name__})")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


Slug = Annotated[str, AfterValidator(_check_slug)]
Ident = Annotated[str, AfterValidator(_check_ident)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Scalar = Annotated[Any, AfterValidator(_check_scalar)]


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


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ChatMessage(_Strict):
    role: Role
    content: NonEmptyStr
    name: str | None = None


class Prompt(_Strict):
    # `id: 1` in YAML is an int; accept it as "1" rather than fail on a technicality.
    model_config = ConfigDict(coerce_numbers_to_str=True)

    id: Ident
    text: NonEmptyStr | None = None
    vars: dict[str, Scalar] | None = None
    messages: list[ChatMessage] | None = Field(None, min_length=1)

    @model_validator(mode="after")
    def _one_kind(self) -> Prompt:
        given = [k for k in ("text", "vars", "messages") if getattr(self, k) is not None]
        if len(given) != 1:
            found = f" (found {', '.join(given)})" if given else ""
            raise FieldError(
                given[1] if len(given) > 1 else "",
                f"prompt {self.id!r} needs exactly one of text, vars or messages{found}",
            )
        if self.messages is not None and self.messages[-1].role != "user":
            raise FieldError(
                f"messages.{len(self.messages) - 1}",
                f"prompt {self.id!r}: the last message must have role 'user' (the model answers"
                f" it; got {self.messages[-1].role!r})",
            )
        return self

    @property
    def kind(self) -> str:
        return "text" if self.text is not None else "vars" if self.vars is not None else "messages"


class TargetParams(_Strict):
    """Sampling parameters passed to the provider. Unknown names are refused (see ALLOWED_PARAMS)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    seed: int | None = None
    stop: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, min_length=1, max_length=MAX_STOP_SEQUENCES
    )
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


ALLOWED_PARAMS = tuple(sorted(TargetParams.model_fields))


class Target(_Strict):
    provider: Provider
    model: NonEmptyStr | None = None
    deployment: NonEmptyStr | None = None
    label: Ident | None = None
    params: TargetParams = Field(default_factory=TargetParams)

    @model_validator(mode="after")
    def _model_or_deployment(self) -> Target:
        if self.deployment is not None and self.provider != "azure":
            raise FieldError(
                "deployment",
                f"'deployment' is only for provider azure; {self.provider} targets name a 'model'",
            )
        if self.model is None and self.deployment is None:
            wanted = "'deployment' (or 'model')" if self.provider == "azure" else "'model'"
            raise FieldError("model", f"a {self.provider} target needs {wanted}")
        return self

    @property
    def model_name(self) -> str:
        """The model the target names: `model`, else the Azure deployment."""
        return self.model or self.deployment or ""

    @property
    def default_label(self) -> str:
        """`{provider}-{model}` from the model's last path segment (`hyperbolic-Llama-3.3-70B`),
        or just the model when it already starts with the provider (`offline-echo`)."""
        model = re.sub(r"[^A-Za-z0-9._-]+", "-", self.model_name.rsplit("/", 1)[-1]).strip("-._")
        if model == self.provider or model.startswith(f"{self.provider}-"):
            return model
        return f"{self.provider}-{model}" if model else self.provider


_SWITCH = {"on": True, "off": False, "yes": True, "no": False, "true": True, "false": False}


class EmbedConfig(_Strict):
    """`embed: true|false|on|off`, or a mapping with optional provider/model (on by default)."""

    enabled: bool = False
    provider: EmbedProvider | None = None
    model: NonEmptyStr | None = None

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, EmbedConfig):
            return value
        if value is None:  # `embed:` left empty
            return {"enabled": False}
        if isinstance(value, str) and value.lower() in _SWITCH:
            return {"enabled": _SWITCH[value.lower()]}
        if isinstance(value, bool):
            return {"enabled": value}
        if isinstance(value, dict):
            return value if "enabled" in value else {**value, "enabled": True}
        raise ValueError(
            f"use on/off (true/false) or a mapping with optional provider and model (got {value!r})"
        )


_DEFER_CROSS_CHECKS = "defer_cross_checks"


class PromptSet(_Strict):
    """A validated prompt set. Build one with `load_prompt_set` (errors with lines) or
    `PromptSet.model_validate(data)` (same checks, pydantic's error type)."""

    name: Slug
    description: str = ""
    system: str | None = None
    template: str | None = None
    prompts: list[Prompt] = Field(min_length=1)
    targets: list[Target] = Field(min_length=1)
    samples: int = Field(1, ge=1, le=MAX_SAMPLES)
    embed: EmbedConfig = Field(default_factory=lambda: EmbedConfig(enabled=False))
    cache: bool = False
    schedule: Schedule = "none"
    tags: list[NonEmptyStr] = Field(default_factory=list)

    _labels: list[str] = PrivateAttr(default_factory=list)

    @field_validator("template")
    @classmethod
    def _template_parses(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> PromptSet:
        self._labels = resolve_labels(self.targets)
        if info.context and info.context.get(_DEFER_CROSS_CHECKS):
            return self  # the loader runs them itself, to report each with its line
        issues = _cross_check(self.template, enumerate(self.prompts), enumerate(self.targets))
        if issues:
            raise ValueError("; ".join(f"{_format_loc(loc)}: {msg}" for loc, msg in issues))
        return self

    @property
    def target_labels(self) -> list[str]:
        """Each target's label: its own, else `{provider}-{model}` made unique within the set."""
        return list(self._labels)

    @property
    def expected_calls(self) -> int:
        return len(self.prompts) * len(self.targets) * self.samples

    def canonical_json(self) -> str:
        """The validated content as canonical JSON: what `content_hash` hashes. Defaults are
        left out, so spelling one out (`cache: false`) is not a change."""
        data = self.model_dump(mode="json", exclude_defaults=True)
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    def content_hash(self) -> str:
        return content_hash(self)

    def prompt_messages(self, prompt: Prompt) -> list[dict[str, Any]]:
        """The chat messages sent for `prompt`: the set's system prompt first (unless the
        prompt's own messages start with one), then the prompt."""
        if prompt.messages is not None:
            body = [m.model_dump(exclude_none=True) for m in prompt.messages]
        else:
            body = [{"role": "user", "content": self.prompt_text(prompt)}]
        if self.system and body[0]["role"] != "system":
            body.insert(0, {"role": "system", "content": self.system})
        return body

    def prompt_text(self, prompt: Prompt) -> str | None:
        """The plain text of a `text` or `vars` prompt (rendered); None for `messages`."""
        if prompt.text is not None:
            return prompt.text
        if prompt.vars is not None:
            return render_template(self.template or "", prompt.vars)
        return None

    def iter_work_items(self) -> Iterator[WorkItem]:
        """Prompt-major, then target, then sample: the order of the file."""
        index = 0
        for prompt in self.prompts:
            messages = self.prompt_messages(prompt)
            text = self.prompt_text(prompt)
            for target, label in zip(self.targets, self._labels, strict=True):
                params = target.params.as_dict()
                for sample in range(self.samples):
                    yield WorkItem(
                        key=f"{prompt.id}/{label}/{sample}",
                        index=index,
                        prompt_id=prompt.id,
                        target_label=label,
                        sample_index=sample,
                        provider=target.provider,
                        model=target.model,
                        deployment=target.deployment,
                        params=dict(params),
                        messages=copy.deepcopy(messages),
                        prompt_text=text,
                        vars=dict(prompt.vars) if prompt.vars is not None else None,
                    )
                    index += 1

    def work_items(self) -> list[WorkItem]:
        return list(self.iter_work_items())


@dataclass(frozen=True)
class WorkItem:
    """One call to make: a prompt sent to a target, for one sample."""

    key: str  # "{prompt_id}/{target_label}/{sample_index}", unique and stable within the set
    index: int  # position in expansion order, 0-based
    prompt_id: str
    target_label: str
    sample_index: int  # 0-based
    provider: str
    model: str | None
    deployment: str | None  # azure only
    params: dict[str, Any]  # only the parameters the target sets
    messages: list[dict[str, Any]]  # final chat messages, system prompt first when set
    prompt_text: str | None  # the plain prompt (rendered for vars prompts); None for messages
    vars: dict[str, Any] | None = None

    @property
    def model_name(self) -> str:
        return self.model or self.deployment or ""


def resolve_labels(targets: Sequence[Target]) -> list[str]:
    """Explicit labels as given; missing ones derived from provider+model, suffixed `-2`, `-3`…
    when that is taken, so labels are unique whenever the explicit ones are."""
    taken = {t.label for t in targets if t.label}
    labels: list[str] = []
    for target in targets:
        if target.label:
            labels.append(target.label)
            continue
        base = target.default_label
        label, n = base, 1
        while label in taken:
            n += 1
            label = f"{base}-{n}"
        taken.add(label)
        labels.append(label)
    return labels


Loc = tuple[str | int, ...]


def _cross_check(
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
        fingerprint = json.dumps(same, sort_keys=True)
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


# --- content hash ----------------------------------------------------------------------------


def content_hash(prompt_set: PromptSet) -> str:
    """sha256 (hex) of the canonical validated content: comments, whitespace, key order, YAML vs
    JSON and spelled-out defaults do not change it; any change to what would run does."""
    return hashlib.sha256(prompt_set.canonical_json().encode("utf-8")).hexdigest()


# --- loading ---------------------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 would turn `NO` (Norway),
    `yes`, `on` and `off` into booleans, silently changing prompt variables."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


@dataclass(frozen=True)
class LoadedPromptSet:
    path: Path
    prompt_set: PromptSet
    content_hash: str

    @property
    def name(self) -> str:
        return self.prompt_set.name


def load_prompt_set(path: str | Path) -> LoadedPromptSet:
    """Read, parse and validate one file. Raises PromptSetError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PromptSetError(
            [PromptSetProblem(str(path), None, "", f"cannot read file: {reason}")]
        ) from None
    return parse_prompt_set(text, path)


def parse_prompt_set(text: str, path: str | Path = "<string>") -> LoadedPromptSet:
    """Validate prompt set text; `path` names the source in errors and picks JSON for `.json`."""
    source = str(path)
    data, root = _parse(text, source, as_json=str(path).lower().endswith(".json"))
    prompt_set = _validate(data, root, source)
    return LoadedPromptSet(Path(path), prompt_set, content_hash(prompt_set))


def discover_prompt_sets(
    directory: str | Path,
) -> tuple[dict[str, LoadedPromptSet], dict[str, PromptSetError]]:
    """Load every `*.yaml`, `*.yml` and `*.json` directly in `directory` (not recursive; hidden
    files skipped). Returns (valid sets by name, errors by file path). Two files declaring the
    same name are both errors: neither can be the partition without the other being lost."""
    directory = Path(directory)
    if not directory.is_dir():
        raise NotADirectoryError(f"prompt set folder {directory} does not exist or is not a folder")
    loaded: dict[str, LoadedPromptSet] = {}
    errors: dict[str, PromptSetError] = {}
    files = sorted(
        p
        for p in directory.iterdir()
        if p.suffix.lower() in SUFFIXES and not p.name.startswith(".") and p.is_file()
    )
    by_name: dict[str, list[LoadedPromptSet]] = {}
    for file in files:
        try:
            item = load_prompt_set(file)
        except PromptSetError as exc:
            errors[str(file)] = exc
            continue
        by_name.setdefault(item.name, []).append(item)
    for name, items in by_name.items():
        if len(items) == 1:
            loaded[name] = items[0]
            continue
        for item in items:
            others = ", ".join(o.path.name for o in items if o is not item)
            line = _name_line(item.path)
            errors[str(item.path)] = PromptSetError(
                [
                    PromptSetProblem(
                        str(item.path), line, "name", f"name {name!r} is also declared by {others}"
                    )
                ]
            )
    log.info(
        "prompt sets in %s: %d valid, %d invalid (%s)",
        directory,
        len(loaded),
        len(errors),
        ", ".join(sorted(loaded)) or "none",
    )
    return dict(sorted(loaded.items())), errors


def _name_line(path: Path) -> int | None:
    try:
        root = yaml.compose(path.read_text(encoding="utf-8").replace("\t", " "), Loader=_Loader)
    except (OSError, yaml.YAMLError):
        return None
    return _locate(root, ("name",))[0] if root is not None else None


def _parse(text: str, source: str, as_json: bool) -> tuple[Any, yaml.Node | None]:
    """(data, node tree). JSON is parsed by `json` (strict syntax), its node tree by YAML."""
    if as_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise PromptSetError(
                [
                    PromptSetProblem(
                        source,
                        exc.lineno,
                        _path_at(text[: exc.pos]),
                        f"invalid JSON at column {exc.colno}: {exc.msg}",
                        exc.colno,
                    )
                ]
            ) from None
        try:
            # Raw tabs can only be whitespace in valid JSON; YAML refuses them as indentation.
            root = yaml.compose(text.replace("\t", " "), Loader=_Loader)
        except yaml.YAMLError:
            root = None  # valid JSON that YAML 1.1 cannot read: errors lose their lines only
        problems = _duplicate_keys(root, source) if root is not None else []
        if problems:
            raise PromptSetError(problems)
        return data, root
    loader = _Loader(text)
    try:
        root = loader.get_single_node()
        if root is not None:
            problems = _duplicate_keys(root, source)
            if problems:
                raise PromptSetError(problems)
        data = loader.construct_document(root) if root is not None else None
    except yaml.MarkedYAMLError as exc:
        raise PromptSetError([_syntax_problem(exc, text, source)]) from None
    except yaml.YAMLError as exc:
        raise PromptSetError([PromptSetProblem(source, None, "", f"invalid YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return data, root


def _syntax_problem(exc: yaml.MarkedYAMLError, text: str, source: str) -> PromptSetProblem:
    problem, context = exc.problem or "cannot parse", exc.context or ""
    mark, context_mark = exc.problem_mark, exc.context_mark
    at_end = "end of stream" in problem or "<stream end>" in problem
    if context_mark and (mark is None or at_end):
        # An unclosed quote or bracket fails at the end of the file; where it opened is the news.
        line, column = context_mark.line + 1, context_mark.column + 1
        message = f"invalid YAML at column {column}: {context} starting here: {problem}"
        if mark:
            message += f" (line {mark.line + 1})"
    elif mark:
        line, column = mark.line + 1, mark.column + 1
        message = f"invalid YAML at column {column}: {problem}"
        if context and context_mark:
            message += f" ({context}, line {context_mark.line + 1})"
    else:
        line = column = None
        message = f"invalid YAML: {problem}"
    if "flow" in context:
        message += "; inside [...] and {...}, quote text containing , ? : [ ] { }"
    return PromptSetProblem(source, line, _path_at(text), message, column)


def _duplicate_keys(root: yaml.Node, source: str) -> list[PromptSetProblem]:
    """YAML allows a repeated key (the last wins); in a prompt set it is always a mistake."""
    problems: list[PromptSetProblem] = []

    def walk(node: yaml.Node, loc: Loc) -> None:
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in seen:
                        problems.append(
                            PromptSetProblem(
                                source,
                                key.start_mark.line + 1,
                                _format_loc((*loc, key.value)),
                                f"duplicate key {key.value!r} (first on line {seen[key.value]})",
                                key.start_mark.column + 1,
                            )
                        )
                    else:
                        seen[key.value] = key.start_mark.line + 1
                    walk(value, (*loc, key.value))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, (*loc, i))

    walk(root, ())
    return problems


def _path_at(text: str) -> str:
    """The field path (`prompts[2].text`) where a YAML/JSON parser stopped in `text`: replays the
    parser's events up to the failure, tracking the current key and item index."""
    frames: list[list[Any]] = []  # ["map", key, expecting_key] | ["seq", index]
    try:
        for event in yaml.parse(text, Loader=_Loader):
            if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                if frames:
                    frames.pop()
                continue
            if not isinstance(event, (yaml.NodeEvent, yaml.CollectionStartEvent)):
                continue
            if frames:
                parent = frames[-1]
                if parent[0] == "seq":
                    parent[1] += 1
                elif parent[2]:  # this node is a key
                    parent[2] = False
                    if isinstance(event, yaml.ScalarEvent):
                        parent[1] = event.value
                        continue
                else:  # this node is the current key's value
                    parent[2] = True
            if isinstance(event, yaml.MappingStartEvent):
                frames.append(["map", None, True])
            elif isinstance(event, yaml.SequenceStartEvent):
                frames.append(["seq", -1])
    except yaml.YAMLError:
        pass
    loc: list[str | int] = []
    for frame in frames:
        if (frame[0] == "map" and frame[1] is not None) or (frame[0] == "seq" and frame[1] >= 0):
            loc.append(frame[1])
    return _format_loc(tuple(loc))


def _format_loc(loc: Sequence[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _locate(root: yaml.Node | None, loc: Loc) -> tuple[int | None, int | None]:
    """(line, column) of the deepest node on `loc`; a mapping key points at the key's line."""
    if root is None:
        return None, None
    node, mark = root, root.start_mark
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == part:
                    node, mark = value, key.start_mark
                    break
            else:
                break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            node = node.value[part]
            mark = node.start_mark
        else:
            break
    return mark.line + 1, mark.column + 1


def _validate(data: Any, root: yaml.Node | None, source: str) -> PromptSet:
    def problem(loc: Loc, message: str) -> PromptSetProblem:
        line, column = _locate(root, loc)
        return PromptSetProblem(source, line, _format_loc(loc), message, column)

    if data is None:
        message = "the file is empty; a prompt set needs name, prompts and targets"
        raise PromptSetError([PromptSetProblem(source, 1, "", message)])
    if not isinstance(data, dict):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise PromptSetError(
            [
                problem(
                    (),
                    f"a prompt set must be a mapping with name, prompts and targets (got {kind})",
                )
            ]
        )

    problems: list[PromptSetProblem] = []
    prompt_set: PromptSet | None = None
    try:
        prompt_set = PromptSet.model_validate(data, context={_DEFER_CROSS_CHECKS: True})
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
    problems.extend(problem(loc, msg) for loc, msg in _cross_check(template, prompts, targets))

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
            loc = (*loc, *(_split_field(cause.field)))
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
    }
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        current = nested.get((current, part))
    return current


# --- cost ------------------------------------------------------------------------------------


def max_prompt_tokens(messages: Sequence[dict[str, Any]]) -> int:
    """An upper bound on the prompt tokens of one request (see MESSAGE_OVERHEAD_TOKENS)."""
    total = REQUEST_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + len(str(message.get("content") or "").encode("utf-8"))
        total += len(str(message.get("name") or "").encode("utf-8"))
    return total


@dataclass(frozen=True)
class TargetCost:
    label: str
    provider: str
    model: str  # the name looked up in the price table
    calls: int
    max_prompt_tokens: int  # over all calls to this target
    max_completion_tokens: int | None  # None: no max_tokens
    max_cost: float | None  # USD; None: unknown (see unknown_reason)
    unknown_reason: str | None = None


@dataclass(frozen=True)
class CostEstimate:
    """Upper bound on what a prompt set can cost, per target and in total (USD)."""

    targets: list[TargetCost] = field(default_factory=list)

    @property
    def total(self) -> float | None:
        """None when any target's bound is unknown: a partial sum would under-report."""
        if any(t.max_cost is None for t in self.targets):
            return None
        return sum(t.max_cost or 0.0 for t in self.targets)

    @property
    def unknown(self) -> dict[str, str]:
        """Target label -> why its cost cannot be bounded."""
        return {t.label: t.unknown_reason or "unknown" for t in self.targets if t.max_cost is None}

    def summary(self) -> str:
        total = self.total
        if total is not None:
            return f"at most ${total:,.2f}" if total >= 1 or total == 0 else f"at most ${total:.6f}"
        reasons = "; ".join(f"{label}: {why}" for label, why in self.unknown.items())
        return f"unknown ({reasons})"


def estimate_max_cost(prompt_set: PromptSet, price_table: PriceTable | None = None) -> CostEstimate:
    """Bound the cost of running `prompt_set` once: prompt tokens from the text (at most one
    token per UTF-8 byte plus formatting allowances), completion tokens from `max_tokens`."""
    table = price_table or get_price_table()
    per_prompt = sum(max_prompt_tokens(prompt_set.prompt_messages(p)) for p in prompt_set.prompts)
    calls = len(prompt_set.prompts) * prompt_set.samples
    targets: list[TargetCost] = []
    for target, label in zip(prompt_set.targets, prompt_set.target_labels, strict=True):
        prompt_tokens = per_prompt * prompt_set.samples
        max_tokens = target.params.max_tokens
        completion = max_tokens * calls if max_tokens is not None else None
        price = table.lookup(target.provider, target.model_name)
        reason = None
        if price is None:
            cost = None
            reason = (
                f"no price for {target.provider} model {target.model_name!r};"
                " add it to a PRICING_FILE"
            )
        elif completion is None and price.output_per_1m > 0:
            cost = None
            reason = "no max_tokens, so the answer length is unbounded"
        else:
            cost = price.cost(prompt_tokens, completion or 0)
        targets.append(
            TargetCost(
                label,
                target.provider,
                target.model_name,
                calls,
                prompt_tokens,
                completion,
                cost,
                reason,
            )
        )
    return CostEstimate(targets)


# --- preview ---------------------------------------------------------------------------------


def _one_line(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: max(width - 1, 0)] + "…"


def preview_rows(
    prompt_set: PromptSet, limit: int | None = 20, width: int = 80
) -> list[dict[str, str]]:
    """One row per prompt × target: prompt id, target label, provider/model, and the prompt
    (for a conversation, its turn count and last message) on one line of at most `width`."""
    rows: list[dict[str, str]] = []
    for prompt in prompt_set.prompts:
        text = prompt_set.prompt_text(prompt)
        if text is None:
            messages = prompt_set.prompt_messages(prompt)
            text = f"[{len(messages)} messages] {messages[-1]['content']}"
        for target, label in zip(prompt_set.targets, prompt_set.target_labels, strict=True):
            if limit is not None and len(rows) >= limit:
                return rows
            rows.append(
                {
                    "prompt_id": prompt.id,
                    "target": label,
                    "model": f"{target.provider}/{target.model_name}",
                    "prompt": _one_line(text, width),
                }
            )
    return rows


def preview_markdown(prompt_set: PromptSet, limit: int = 20, width: int = 80) -> str:
    """`preview_rows` as a markdown table, with a closing line when rows were left out."""
    rows = preview_rows(prompt_set, limit=limit, width=width)
    columns = ["prompt_id", "target", "model", "prompt"]

    def cell(value: str) -> str:
        return value.replace("\\", "\\\\").replace("|", "\\|")

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row[c]) for c in columns) + " |" for row in rows]
    total = len(prompt_set.prompts) * len(prompt_set.targets)
    if total > len(rows):
        lines.append(f"\n… {total - len(rows)} more of {total} prompt × target pairs")
    return "\n".join(lines)
