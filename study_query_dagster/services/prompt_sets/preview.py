"""The prompt × target preview a researcher reads in the `prompt_set` asset's metadata: rows, and
the same rows as a markdown table."""

from __future__ import annotations

from ..formatting import markdown_table, one_line
from .models import PromptSet


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
                    "prompt": one_line(text, width),
                }
            )
    return rows


def preview_markdown(prompt_set: PromptSet, limit: int = 20, width: int = 80) -> str:
    """`preview_rows` as a markdown table, with a closing line when rows were left out."""
    rows = preview_rows(prompt_set, limit=limit, width=width)
    table = markdown_table(
        rows, ["prompt_id", "target", "model", "prompt"], limit=None, width=width
    )
    total = len(prompt_set.prompts) * len(prompt_set.targets)
    if total > len(rows):
        table += f"\n\n… {total - len(rows)} more of {total} prompt × target pairs"
    return table
