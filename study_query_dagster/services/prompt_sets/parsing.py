"""Reading prompt set text: YAML or JSON into data plus PyYAML's node tree, which gives every
value its line. Syntax errors and duplicate keys become `PromptSetError`s with line, column and
the field the parser was in. JSON is YAML, so one node tree serves both formats."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from .errors import Loc, PromptSetError, PromptSetProblem, format_loc


class YamlLoader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans: only true/false. YAML 1.1 would turn `NO` (Norway),
    `yes`, `on` and `off` into booleans, silently changing prompt variables."""


YamlLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def parse_text(text: str, source: str, as_json: bool) -> tuple[Any, yaml.Node | None]:
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
        root = node_tree(text)
        problems = _duplicate_keys(root, source) if root is not None else []
        if problems:
            raise PromptSetError(problems)
        return data, root
    loader = YamlLoader(text)
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


def node_tree(text: str) -> yaml.Node | None:
    """The YAML node tree of text already known to parse, for line numbers; None when YAML cannot
    read it (valid JSON that YAML 1.1 refuses: errors then lose their lines only)."""
    try:
        # Raw tabs can only be whitespace in valid JSON; YAML refuses them as indentation.
        return yaml.compose(text.replace("\t", " "), Loader=YamlLoader)
    except yaml.YAMLError:
        return None


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
                                format_loc((*loc, key.value)),
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
        for event in yaml.parse(text, Loader=YamlLoader):
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
    return format_loc(tuple(loc))


def locate(root: yaml.Node | None, loc: Loc) -> tuple[int | None, int | None]:
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
