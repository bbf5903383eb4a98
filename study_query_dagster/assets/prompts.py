"""`prompt_set`: one dynamic partition per prompt set file, validated and stored as a
`prompt_set` group (with the validated content and its hash) that the run assets read."""

import dagster as dg

from ..resources.database import DatabaseResource
from ..resources.embeddings import EmbeddingResource
from ..resources.prompt_sets import PromptSetsResource
from ..resources.providers import LLMProvidersResource
from ..services.prompt_sets import PromptSet, estimate_max_cost, preview_markdown
from ..services.runs import store_prompt_set
from .metadata import ident, md_list

PROMPT_SETS = dg.DynamicPartitionsDefinition(name="prompt_sets")


def missing_credentials(
    prompt_set: PromptSet,
    llm: LLMProvidersResource,
    embedding: EmbeddingResource,
    source: str | None = None,
) -> list[str]:
    """One line per target (or embedder) that cannot be called here, naming the file (when
    given), the field and what to set."""
    where = f"{source}: " if source else ""
    problems = []
    for i, (target, label) in enumerate(
        zip(prompt_set.targets, prompt_set.target_labels, strict=True)
    ):
        missing = llm.missing_env_vars(target.provider)
        if missing:
            problems.append(
                f"{where}targets[{i}] (target {label!r}, provider {target.provider}): "
                f"set {', '.join(missing)}"
            )
    if prompt_set.embed.enabled:
        provider = prompt_set.embed.provider or embedding.provider
        missing = embedding.missing_env_vars(provider, prompt_set.embed.model)
        if missing:
            problems.append(f"{where}embed (provider {provider}): set {', '.join(missing)}")
    return problems


@dg.asset(
    partitions_def=PROMPT_SETS,
    group_name="prompts",
    kinds={"yaml"},
    check_specs=[
        dg.AssetCheckSpec(
            "prompt_set_is_valid",
            asset="prompt_set",
            blocking=True,
            description="Every target (and the embedder) is configured, so no call can fail "
            "for lack of credentials.",
        )
    ],
)
def prompt_set(
    context: dg.AssetExecutionContext,
    database: DatabaseResource,
    prompt_sets: PromptSetsResource,
    llm: LLMProvidersResource,
    embedding: EmbeddingResource,
):
    """A prompt set file, parsed and validated (a malformed file fails here with its file,
    line and field), stored as a `prompt_set` group with its content hash."""
    loaded = prompt_sets.load(context.partition_key)
    group_id = store_prompt_set(database.get_connection(), loaded, stored_by=context.run.run_id)
    ps = loaded.prompt_set
    cost = estimate_max_cost(ps)
    problems = missing_credentials(ps, llm, embedding, source=str(loaded.path))
    targets = [
        f"{label}: {t.provider} {t.model_name}"
        for t, label in zip(ps.targets, ps.target_labels, strict=True)
    ]
    yield dg.MaterializeResult(
        metadata={
            "file": str(loaded.path),
            "content_hash": loaded.content_hash,
            "prompts": len(ps.prompts),
            "targets": md_list(targets),
            "samples": ps.samples,
            "expected_calls": ps.expected_calls,
            "estimated_max_cost_usd": cost.total,
            "cost_note": cost.summary(),
            "preview": dg.MetadataValue.md(preview_markdown(ps)),
            "group_id": ident(group_id),
        }
    )
    yield dg.AssetCheckResult(
        check_name="prompt_set_is_valid",
        passed=not problems,
        description="; ".join(problems) or "all targets configured",
        metadata={"problems": md_list(problems)},
    )
