"""The prompt set schema: pydantic models of the file format (`PromptSet`, `Prompt`, `Target`,
`TargetParams`, `EmbedConfig`, `ChatMessage`), target labels, the `WorkItem`s a set expands into,
and the content hash that identifies a set's validated content."""

from __future__ import annotations

import copy
import hashlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from ...providers.registry import CHAT_PROVIDERS, EMBEDDING_PROVIDERS
from .. import request_identity
from . import scripting
from .cross_checks import cross_check
from .errors import FieldError, format_loc
from .templates import render_template, template_fields
from .variation import VariationConfig

# The providers a target (PROVIDERS) or `embed:` (EMBED_PROVIDERS) may name: the registry's rows.
PROVIDERS: tuple[str, ...] = CHAT_PROVIDERS
EMBED_PROVIDERS: tuple[str, ...] = EMBEDDING_PROVIDERS
Provider = Literal[PROVIDERS]
EmbedProvider = Literal[EMBED_PROVIDERS]
Schedule = Literal["none", "daily", "hourly"]
Role = Literal["system", "user", "assistant"]
SCHEDULES: tuple[str, ...] = get_args(Schedule)
MAX_SHARDS = 1000
MAX_SAMPLES = 100
MAX_STOP_SEQUENCES = 4
MAX_TOOLS = 128
MAX_TOP_LOGPROBS = 20
SampleSeed = Literal["offset", "fixed"]

_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
# Prompt ids and target labels form work-item keys `prompt/target/sample`, so no "/" or spaces.
_IDENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")

# Validation context key: the loader runs the cross-item checks itself, to give each its line.
DEFER_CROSS_CHECKS = "defer_cross_checks"


def _matching(pattern: re.Pattern[str], rule: str, why: str):
    """An AfterValidator refusing strings that do not match `pattern`."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{rule} (got {value!r}); {why}")
        return value

    return check


_check_slug = _matching(
    _SLUG,
    "must be a slug of at most 64 lowercase letters, digits, '-' or '_', starting with a letter"
    " or digit",
    "it is the Dagster partition key",
)
_check_ident = _matching(
    _IDENT,
    "may hold at most 100 letters, digits, '.', '-' or '_', starting with a letter or digit",
    "it is part of each work item's key",
)


def _check_scalar(value: Any) -> Any:
    if not isinstance(value, (str, int, float, bool)):
        raise ValueError(f"must be a string or a number (got {type(value).__name__})")
    return value


def _as_list(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _as_references(value: Any) -> Any:
    # `reference: 100` (YAML int) is the answer "100".
    if isinstance(value, str | int | float) and not isinstance(value, bool):
        return [value]
    return value


Slug = Annotated[str, AfterValidator(_check_slug)]
Ident = Annotated[str, AfterValidator(_check_ident)]
NonEmptyStr = Annotated[str, Field(min_length=1)]
Scalar = Annotated[Any, AfterValidator(_check_scalar)]


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
    # Acceptable answers (one or several), for correctness and calibration; never sent.
    reference: Annotated[list[NonEmptyStr] | None, BeforeValidator(_as_references)] = Field(
        None, min_length=1, max_length=20
    )

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


class FunctionSpec(_Strict):
    """A function the model may call (OpenAI's `tools[].function`)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: str | None = None
    parameters: dict[str, Any] | None = None  # a JSON Schema object
    strict: bool | None = None


class Tool(_Strict):
    type: Literal["function"] = "function"
    function: FunctionSpec


class ToolChoiceFunction(_Strict):
    name: NonEmptyStr


class NamedToolChoice(_Strict):
    """`tool_choice: {type: function, function: {name: ...}}`: call this tool."""

    type: Literal["function"] = "function"
    function: ToolChoiceFunction


class TargetParams(_Strict):
    """Parameters passed to the provider: sampling, tools, log-probabilities. Unknown names are
    refused (see ALLOWED_PARAMS)."""

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1, le=1_000_000)
    seed: int | None = None
    stop: Annotated[list[str] | None, BeforeValidator(_as_list)] = Field(
        None, min_length=1, max_length=MAX_STOP_SEQUENCES
    )
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    tools: list[Tool] | None = Field(None, min_length=1, max_length=MAX_TOOLS)
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=MAX_TOP_LOGPROBS)

    # Offline targets only: scripted answer quotas (see scripting.py); resolved per run and
    # per prompt, so they are not part of `as_dict()` but of each work item's params.
    offline_answers: Annotated[Any, BeforeValidator(scripting.parse_offline_answers)] = None

    @model_validator(mode="after")
    def _consistent(self) -> TargetParams:
        if self.tools is not None:
            names = [t.function.name for t in self.tools]
            duplicate = next((n for n in names if names.count(n) > 1), None)
            if duplicate:
                raise FieldError("tools", f"tool {duplicate!r} is declared twice")
        if self.tool_choice is not None:
            if self.tools is None:
                raise FieldError("tool_choice", "tool_choice needs tools to choose from")
            if isinstance(self.tool_choice, NamedToolChoice):
                name = self.tool_choice.function.name
                if name not in {t.function.name for t in self.tools}:
                    raise FieldError(
                        "tool_choice", f"tool_choice names {name!r}, which is not among the tools"
                    )
        if self.top_logprobs is not None and not self.logprobs:
            raise FieldError("top_logprobs", "top_logprobs needs logprobs: true")
        return self

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True, exclude={scripting.PARAM})


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
        if self.params.offline_answers is not None and self.provider != "offline":
            raise FieldError(
                f"params.{scripting.PARAM}",
                f"scripted answers are for provider offline only ({self.provider} answers "
                "for itself)",
            )
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
    # With a target seed, sample i is sent with seed + i ("offset"), so samples are draws even
    # from a server that honours seeds; "fixed" keeps one seed (to study non-determinism).
    sample_seed: SampleSeed = "offset"
    embed: EmbedConfig = Field(default_factory=lambda: EmbedConfig(enabled=False))
    cache: bool = False
    schedule: Schedule = "none"
    tags: list[NonEmptyStr] = Field(default_factory=list)
    variation: VariationConfig = Field(default_factory=VariationConfig)
    # Split the run's calls into this many steps (contiguous slices of the items), which the
    # executor may run at once on different workers; each resumes on its own.
    shards: int = Field(1, ge=1, le=MAX_SHARDS)

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
        if self.variation.strategy == "embedding" and not self.embed.enabled:
            raise FieldError(
                "variation.strategy",
                "the embedding strategy compares the answers' embeddings: set 'embed: on' (or"
                " use strategy exact)",
            )
        asked = "clusters" in self.variation.model_fields_set
        if asked and self.variation.clusters.enabled and not self.embed.enabled:
            raise FieldError(
                "variation.clusters",
                "answer clusters are found in embedding space: set 'embed: on' (or"
                " clusters: {enabled: false})",
            )
        if info.context and info.context.get(DEFER_CROSS_CHECKS):
            return self  # the loader runs them itself, to report each with its line
        issues = cross_check(
            self.template, enumerate(self.prompts), enumerate(self.targets), self.samples
        )
        if issues:
            raise ValueError("; ".join(f"{format_loc(loc)}: {msg}" for loc, msg in issues))
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
        return request_identity.canonical_json(data)

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

    def for_run(self, run_number: int) -> PromptSet:
        """The set as its `run_number`-th run (1-based) sends it: each target's scripted
        offline answers narrowed to that run's script (the set itself when nothing is
        scripted per run)."""
        targets = [
            t.model_copy(
                update={
                    "params": t.params.model_copy(
                        update={
                            scripting.PARAM: scripting.for_run(t.params.offline_answers, run_number)
                        }
                    )
                }
            )
            for t in self.targets
        ]
        return self.model_copy(update={"targets": targets})

    def iter_work_items(
        self, start: int = 0, stop: int | None = None, *, target: str | None = None
    ) -> Iterator[WorkItem]:
        """Prompt-major, then target, then sample: the order of the file. `start`/`stop`
        slice by item index and `target` keeps one target label, without building the items
        left out (a shard of a large set)."""
        per_prompt = len(self.targets) * self.samples
        first = start // per_prompt
        stop = self.expected_calls if stop is None else min(stop, self.expected_calls)
        index = first * per_prompt
        for prompt in self.prompts[first:]:
            if index >= stop:
                return
            messages = self.prompt_messages(prompt)
            text = self.prompt_text(prompt)
            for target_spec, label in zip(self.targets, self._labels, strict=True):
                if target is not None and label != target:
                    index += self.samples
                    continue
                params = target_spec.params.as_dict()
                # A set not resolved for a run (previews, cost) shows its first run's script.
                script = scripting.for_run(target_spec.params.offline_answers, 1)
                quota = scripting.quota_for(script, prompt.id)
                if quota is not None:
                    params[scripting.PARAM] = dict(quota)
                for sample in range(self.samples):
                    if index < start or index >= stop:
                        index += 1
                        continue
                    sent = copy.deepcopy(params)
                    if "seed" in sent and self.sample_seed == "offset":
                        sent["seed"] = params["seed"] + sample
                    yield WorkItem(
                        key=f"{prompt.id}/{label}/{sample}",
                        index=index,
                        prompt_id=prompt.id,
                        target_label=label,
                        sample_index=sample,
                        provider=target_spec.provider,
                        model=target_spec.model,
                        deployment=target_spec.deployment,
                        params=sent,
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
    params: dict[str, Any]  # the target's parameters as sent (seed + sample with "offset")
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


def content_hash(prompt_set: PromptSet) -> str:
    """sha256 (hex) of the canonical validated content: comments, whitespace, key order, YAML vs
    JSON and spelled-out defaults do not change it; any change to what would run does."""
    return hashlib.sha256(prompt_set.canonical_json().encode("utf-8")).hexdigest()
