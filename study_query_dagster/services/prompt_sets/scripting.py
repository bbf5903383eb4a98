"""Scripted offline answers: `params.offline_answers` of an offline target gives exact answer
quotas, so a variation metric has a known value.

    offline_answers:
      capital: {Canberra: 7, Sydney: 3}   # prompt id -> {answer: count}; counts add up to samples
      "*": {"I do not know": 10}          # every prompt without its own entry

A list scripts successive runs of the set: entry i is used by its (i + 1)-th run, the last one
by every later run. `for_run` picks the entry when a run starts (the run keeps the resolved
script), and `quota_for` the prompt's quota for each work item: the offline provider then gives
sample i the answer whose quota covers position i, most frequent answers first, ties in
code-point order (`providers.offline.scripted_answer`; not the order written, which a
PostgreSQL JSONB copy of the set does not keep).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, TypeAdapter, ValidationError

from ...providers.offline import SCRIPT_PARAM
from .errors import FieldError, Loc

EVERY_PROMPT = "*"
PARAM = SCRIPT_PARAM


def _number_as_text(value: Any) -> Any:
    # `42: 10` in YAML is an int key; an answer (or prompt id) "42" is what was meant.
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


Text = Annotated[str, BeforeValidator(_number_as_text), Field(min_length=1)]
Quota = dict[Text, Annotated[int, Field(ge=1)]]
Script = dict[Text, Quota]
OfflineAnswers = Script | list[Script]
_ONE = TypeAdapter(Script)
_RUNS = TypeAdapter(Annotated[list[Script], Field(min_length=1)])


def parse_offline_answers(value: Any) -> OfflineAnswers | None:
    """Validate `offline_answers` (one script, or a list of one per run); a mistake is a
    FieldError at the prompt key (answers may hold dots, so they go in the message)."""
    if value is None:
        return None
    if not isinstance(value, dict | list):
        raise FieldError(
            "",
            "must map prompt ids (or '*') to {answer: count}, or be a list of such mappings"
            f" (one per run) (got {type(value).__name__})",
        )
    runs = isinstance(value, list)
    try:
        return (_RUNS if runs else _ONE).validate_python(value)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = error["loc"]
        depth = 2 if runs else 1  # [run index,] prompt key
        where, inner = loc[:depth], loc[depth:]
        message = error["msg"]
        if inner:
            message += f" (answer {inner[0]!r}"
            message += f": got {error['input']!r})" if len(inner) == 1 else ")"
        elif isinstance(error["input"], str | int | float):
            message += f" (got {error['input']!r})"
        raise FieldError(".".join(str(p) for p in where), message) from None


def for_run(answers: OfflineAnswers | None, run_number: int) -> Script | None:
    """The script of the `run_number`-th run (1-based) of the set."""
    if answers is None or isinstance(answers, dict):
        return answers
    return answers[min(max(run_number, 1), len(answers)) - 1]


def quota_for(script: Script | None, prompt_id: str) -> Quota | None:
    if script is None:
        return None
    return script.get(prompt_id, script.get(EVERY_PROMPT))


def script_problems(
    answers: OfflineAnswers | None, prompt_ids: Iterable[str], samples: int, where: Loc
) -> list[tuple[Loc, str]]:
    """Keys that are not prompt ids of the set, and quotas whose counts do not add up to
    `samples` (each at its location under `where`, e.g. targets[0].params.offline_answers)."""
    if answers is None:
        return []
    known = set(prompt_ids)
    scripts: Sequence[tuple[Loc, Script]] = (
        [(where, answers)]
        if isinstance(answers, dict)
        else [((*where, i), s) for i, s in enumerate(answers)]
    )
    issues: list[tuple[Loc, str]] = []
    for loc, script in scripts:
        for key, quota in script.items():
            if key != EVERY_PROMPT and key not in known:
                issues.append(((*loc, key), _unknown_prompt(key, known)))
            elif sum(quota.values()) != samples:
                total = sum(quota.values())
                issues.append(
                    (
                        (*loc, key),
                        f"the counts add up to {total}, but the set has samples: "
                        f"{samples} (each sample gets one scripted answer)",
                    )
                )
    return issues


def _unknown_prompt(key: str, known: set[str]) -> str:
    shown = ", ".join(sorted(known)[:10])
    return f"{key!r} is not a prompt id of this set (use one of: {shown}; or '*' for every prompt)"


def resolved(params: Mapping[str, Any], prompt_id: str) -> dict[str, Any]:
    """A target's params for one prompt: `offline_answers` replaced by that prompt's quota, or
    dropped when the script has none for it (the offline provider then answers as usual)."""
    out = {k: v for k, v in params.items() if k != PARAM}
    quota = quota_for(params.get(PARAM), prompt_id)
    if quota is not None:
        out[PARAM] = dict(quota)
    return out
