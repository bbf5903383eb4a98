"""Malformed prompt sets run through the whole study graph: each fails with an error naming the
file, line and field; no call reaches the (fake) provider; the app DB is left as it was."""

from __future__ import annotations

import dagster as dg
import pytest
from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, EmbeddingVector, Group, GroupMember, RawCall
from study_query_dagster.resources.embeddings import EmbeddingResource
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings
from tests.support.drills import step_failure
from tests.support.pipeline import (
    FAST_RETRIES,
    STUDY_ASSETS,
    make_resources,
    study_assets_and_checks,
    write_prompt_set,
)

VALID = """\
name: {name}
prompts:
  - {{id: a, text: "alpha question"}}
  - {{id: b, text: "beta question"}}
  - {{id: c, text: "gamma question"}}
targets:
  - {{provider: openai, model: gpt-4o-mini}}
samples: 2
embed: {{provider: openai, model: text-embedding-3-small}}
"""

# name -> (file text, (line, field, what the message says)); lines are those of the file.
CASES = {
    "syntax": (
        VALID.replace('"beta question"}}', '"beta question"'),
        (5, "prompts[1].text", "invalid YAML"),  # where the parser noticed
    ),
    "missing": (
        VALID.replace("targets:\n  - {{provider: openai, model: gpt-4o-mini}}\n", ""),
        (1, "targets", "required field is missing"),
    ),
    "unknown": (
        VALID.replace("provider: openai, model: gpt", "provider: openia, model: gpt"),
        (7, "targets[0].provider", "(got 'openia')"),
    ),
    "duplicate": (
        VALID.replace("{{id: c,", "{{id: a,"),
        (5, "prompts[2].id", "duplicate id 'a'"),
    ),
}


def materialize(resources, name: str, instance=None):
    def run(inst):
        inst.add_dynamic_partitions("prompt_sets", [name])
        return dg.materialize(
            study_assets_and_checks(),
            partition_key=name,
            instance=inst,
            resources=resources,
            selection=STUDY_ASSETS,
            raise_on_error=False,
        )

    if instance is not None:
        return run(instance)
    with dg.instance_for_test() as inst:
        return run(inst)


def app_db_counts(db_url: str) -> dict[str, int]:
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        counts = {
            model.__tablename__: session.scalar(select(func.count()).select_from(model))
            for model in (RawCall, Group, GroupMember, EmbeddingVector)
        }
    db.dispose()
    return counts


EMPTY = {"raw_calls": 0, "groups": 0, "group_members": 0, "embedding_vectors": 0}


@pytest.mark.parametrize("case", list(CASES))
def test_a_malformed_file_names_file_line_and_field_and_touches_nothing(
    case, db_url, prompt_dir, llm_server
):
    text, (line, field, says) = CASES[case]
    path = write_prompt_set(prompt_dir, case, text.format(name=case))
    result = materialize(make_resources(db_url, prompt_dir, llm_server.url), case)

    assert not result.success
    message = step_failure(result, "prompt_set")
    assert f"{path}:{line}: {field}: " in message and says in message, message
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    meta = failure.event_specific_data.user_failure_data.metadata
    assert (meta["file"].value, meta["line"].value, meta["field"].value) == (str(path), line, field)
    assert result.get_asset_materialization_events() == []  # nothing downstream ran
    assert llm_server.count() == 0
    assert app_db_counts(db_url) == EMPTY


def test_a_target_without_credentials_is_refused_before_any_call(db_url, prompt_dir, llm_server):
    openai_only = LLMProvidersResource(
        openai=ProviderSettings(api_key="sk-test-fake", base_url=llm_server.openai_base_url),
        **FAST_RETRIES,
    )  # Azure: no key, no endpoint
    resources = {
        **make_resources(db_url, prompt_dir),
        "llm": openai_only,
        "embedding": EmbeddingResource(llm=openai_only),
    }
    text = VALID.replace(
        "targets:\n", "targets:\n  - {{provider: azure, deployment: gpt-4o-dep}}\n"
    ).format(name="nokeys")
    path = write_prompt_set(prompt_dir, "nokeys", text)
    result = materialize(resources, "nokeys")

    assert not result.success
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "prompt_set_is_valid" and not check.passed
    assert check.description == (
        f"{path}: targets[0] (target 'azure-gpt-4o-dep', provider azure): "
        "set AZURE_OPENAI_API_KEY, AZURE_OPENAI_ENDPOINT"
    )
    assert llm_server.count() == 0
    # The blocking check stopped the run before inference: no call, no run. What is stored is
    # the validated file itself (the prompt_set group), complete, ready for when keys are set.
    counts = app_db_counts(db_url)
    assert counts == {**EMPTY, "groups": 1}
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        [group] = session.scalars(select(Group))
        assert (group.group_type, group.name) == ("prompt_set", "nokeys")
        assert group.metadata_json["content"]["targets"][0]["provider"] == "azure"
    db.dispose()


def test_breaking_a_stored_set_changes_nothing(db_url, prompt_dir, llm_server):
    """A set that ran once is edited into an invalid file: the next materialization fails and
    leaves the stored set, its run and its calls exactly as they were."""
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    write_prompt_set(prompt_dir, "edited", VALID.format(name="edited"))
    with dg.instance_for_test() as instance:
        assert materialize(resources, "edited", instance).success
        before, sent = app_db_counts(db_url), llm_server.count()
        db = DatabaseConnection(db_url)
        with db.session_scope() as session:
            stored = session.scalars(select(Group).where(Group.group_type == "prompt_set")).one()
            stored_meta = dict(stored.metadata_json)

        text, (line, field, _) = CASES["duplicate"]
        path = write_prompt_set(prompt_dir, "edited", text.format(name="edited"))
        again = materialize(resources, "edited", instance)
    assert not again.success
    assert f"{path}:{line}: {field}: " in step_failure(again, "prompt_set")
    assert llm_server.count() == sent
    assert app_db_counts(db_url) == before
    with db.session_scope() as session:
        stored = session.scalars(select(Group).where(Group.group_type == "prompt_set")).one()
        assert stored.metadata_json == stored_meta
    db.dispose()
