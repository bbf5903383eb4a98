"""The prompt × target preview a researcher reads in the `prompt_set` asset's metadata: rows, and
the same rows as a markdown table."""

from __future__ import annotations

from .models import PromptSet


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
