"""The study pipeline under `materialize` on a test instance: real databases (SQLite and
PostgreSQL), the fake LLM server through the real openai client."""

import dagster as dg
from sqlalchemy import func, select, text

from study_query_dagster.db import DatabaseConnection, Group, GroupMember, RawCall
from study_query_dagster.resources.providers import LLMProvidersResource, ProviderSettings
from tests.support.fake_llm_server import Fault
from tests.support.pipeline import (
    FAST_RETRIES,
    STUDY_ASSETS,
    make_resources,
    study_assets_and_checks,
    write_prompt_set,
)

QA = """
    name: qa
    system: Answer briefly.
    prompts:
      - {id: sky, text: "What colour is the sky?"}
      - {id: sea, text: "What colour is the sea?"}
    targets:
      - {provider: openai, model: gpt-4o-mini, params: {temperature: 0, max_tokens: 20}}
      - {provider: offline, model: offline-echo}
    samples: 2
    embed: on
"""


def materialize(resources, name, *, instance=None, selection=None, raise_on_error=False):
    def run(inst):
        inst.add_dynamic_partitions("prompt_sets", [name])
        return dg.materialize(
            study_assets_and_checks(),
            partition_key=name,
            instance=inst,
            resources=resources,
            selection=selection or STUDY_ASSETS,
            raise_on_error=raise_on_error,
        )

    if instance is not None:
        return run(instance)
    with dg.instance_for_test() as inst:
        return run(inst)


def run_checks(resources, name, instance, asset: str):
    """Execute the checks of `asset` again for partition `name`, as "re-run checks" in the UI
    does (prompt_set is selected too, only so the run has a partitioned asset to key on)."""
    selection = dg.AssetSelection.assets("prompt_set") | dg.AssetSelection.checks_for_assets(asset)
    return materialize(resources, name, instance=instance, selection=selection)


def checks(result) -> dict[str, dg.AssetCheckEvaluation]:
    return {c.check_name: c for c in result.get_asset_check_evaluations()}


def metadata(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def count(db_url, model=RawCall, **where) -> int:
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        stmt = select(func.count()).select_from(model)
        for key, value in where.items():
            stmt = stmt.where(getattr(model, key) == value)
        n = session.scalar(stmt)
    db.dispose()
    return n


def test_whole_graph_captures_groups_embeds_and_checks(resources, prompt_dir, db_url, llm_server):
    write_prompt_set(prompt_dir, "qa", QA)
    result = materialize(resources, "qa")
    assert result.success

    ps = metadata(result, "prompt_set")
    assert (ps["prompts"], ps["samples"], ps["expected_calls"]) == (2, 2, 8)
    run = metadata(result, "inference_run")
    assert (run["calls"], run["successes"], run["failures"], run["dagster/row_count"]) == (
        8,
        8,
        0,
        8,
    )
    assert run["total_tokens"] > 0 and run["latency_p95_ms"] >= run["latency_p50_ms"] > 0
    assert "echo: What colour is the sky?" in run["answers_preview"]
    emb = metadata(result, "response_embeddings")
    assert (emb["answers"], emb["embedded"], emb["dimension"]) == (8, 8, 256)

    assert {name: c.passed for name, c in checks(result).items()} == {
        "prompt_set_is_valid": True,
        "every_request_captured": True,
        "failure_rate": True,
        "raw_calls_are_immutable": True,
        "every_response_embedded": True,
        "embedding_dimensions_consistent": True,
    }
    # The openai target really went through the server: 2 prompts x 2 samples.
    assert llm_server.count("/v1/chat/completions") == 4
    assert llm_server.requests[0].body["messages"][0] == {
        "role": "system",
        "content": "Answer briefly.",
    }
    assert count(db_url, modality="text") == 8
    db = DatabaseConnection(db_url)
    with db.session_scope() as session:
        groups = {
            (g.group_type, g.name.split("/")[0]): g.id for g in session.scalars(select(Group))
        }
        run_members = session.scalar(
            select(func.count()).where(GroupMember.group_id == groups[("run", "qa")])
        )
        set_members = session.scalar(
            select(func.count()).where(GroupMember.group_id == groups[("prompt_set", "qa")])
        )
        call = session.scalars(select(RawCall).where(RawCall.provider == "openai")).first()
    db.dispose()
    assert (run_members, set_members) == (8, 8)
    assert call.metadata_json["prompt_set"] == "qa" and call.metadata_json["item_key"].startswith(
        "s"
    )


def test_rematerializing_embeds_from_cache(resources, prompt_dir):
    write_prompt_set(prompt_dir, "qa", QA)
    with dg.instance_for_test() as instance:
        first = materialize(resources, "qa", instance=instance)
        second = materialize(resources, "qa", instance=instance)
    assert first.success and second.success
    # a new run group, the same answers: every vector comes from the cache
    assert metadata(second, "response_embeddings")["cache_hits"] == 8
    assert metadata(second, "response_embeddings")["api_calls"] == 0
    assert (
        metadata(second, "inference_run")["run_group_id"]
        != metadata(first, "inference_run")["run_group_id"]
    )


def test_missing_credentials_fail_before_any_call(db_url, prompt_dir, llm_server):
    write_prompt_set(prompt_dir, "qa", QA)
    resources = make_resources(db_url, prompt_dir, llm_url=None)  # no keys at all
    result = materialize(resources, "qa")
    assert not result.success
    check = checks(result)["prompt_set_is_valid"]
    assert not check.passed and "set OPENAI_API_KEY" in check.description
    # The blocking check stops the run before inference_run: nothing is sent or captured.
    assert llm_server.count() == 0
    assert count(db_url) == 0

    # Even run on its own, inference_run refuses before any call and names the variable.
    with dg.instance_for_test() as instance:
        materialize(resources, "qa", instance=instance, selection=["prompt_set"])
        alone = materialize(resources, "qa", instance=instance, selection=["inference_run"])
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    assert "set OPENAI_API_KEY" in str(failure.event_specific_data.error)
    assert llm_server.count() == 0 and count(db_url) == 0


def test_an_azure_embedder_without_a_deployment_fails_the_check(db_url, prompt_dir, llm_server):
    # Azure has credentials here, but no embedding deployment named anywhere.
    write_prompt_set(prompt_dir, "qa", QA.replace("embed: on", "embed: {provider: azure}"))
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    result = materialize(resources, "qa")
    check = checks(result)["prompt_set_is_valid"]
    assert not check.passed
    assert "embed (provider azure): set EMBEDDING_MODEL" in check.description
    assert llm_server.count() == 0 and count(db_url) == 0

    # Named in the prompt set, it is enough.
    named = QA.replace("embed: on", "embed: {provider: azure, model: my-embedding-deployment}")
    write_prompt_set(prompt_dir, "qa", named)
    assert checks(materialize(resources, "qa"))["prompt_set_is_valid"].passed


def test_malformed_file_fails_with_file_line_and_field(resources, prompt_dir, db_url):
    path = write_prompt_set(prompt_dir, "qa", QA.replace("{id: sea,", "{id: sky,"))
    result = materialize(resources, "qa")
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = str(failure.event_specific_data.error)
    assert f"{path}:" in message and "prompts[1].id" in message and "duplicate" in message
    assert count(db_url, Group) == 0  # nothing half-written


def test_content_refusals_are_results_and_warn(resources, prompt_dir, llm_server):
    write_prompt_set(prompt_dir, "qa", QA)
    llm_server.script(Fault(kind="content_filter"), match="/chat/completions")
    result = materialize(resources, "qa")
    assert result.success  # a refusal is an answer to study, not a reason to fail the run
    run = metadata(result, "inference_run")
    assert (run["successes"], run["failures"]) == (7, 1)
    assert run["failures_by_type"] == {"content_filter": 1}
    rate = checks(result)["failure_rate"]
    assert not rate.passed and rate.severity == dg.AssetCheckSeverity.WARN
    assert checks(result)["every_request_captured"].passed


def test_immutability_check_fails_if_the_guard_is_gone(resources, prompt_dir, db_url, backend):
    write_prompt_set(prompt_dir, "qa", QA)
    with dg.instance_for_test() as instance:
        assert materialize(resources, "qa", instance=instance).success
        db = DatabaseConnection(db_url)
        with db.engine.begin() as conn:
            if backend == "sqlite":
                conn.execute(text("DROP TRIGGER raw_calls_no_update"))
            else:
                conn.execute(
                    text("ALTER TABLE raw_calls DISABLE TRIGGER raw_calls_no_update_delete")
                )
        db.dispose()
        again = run_checks(resources, "qa", instance, "inference_run")
    check = checks(again)["raw_calls_are_immutable"]
    assert not check.passed and check.description == "UPDATE was accepted"


def test_every_request_captured_names_what_is_missing(resources, prompt_dir, db_url):
    write_prompt_set(prompt_dir, "qa", QA)
    with dg.instance_for_test() as instance:
        assert materialize(resources, "qa", instance=instance).success
        db = DatabaseConnection(db_url)
        with db.session_scope() as session:
            call = session.scalars(
                select(RawCall).where(
                    RawCall.metadata_json["item_key"].as_string() == "sea/offline-echo/1"
                )
            ).one()
            session.execute(GroupMember.__table__.delete().where(GroupMember.call_id == call.id))
        db.dispose()
        again = run_checks(resources, "qa", instance, "inference_run")
    check = checks(again)["every_request_captured"]
    assert not check.passed
    assert check.metadata["missing"].value == 1
    assert "sea/offline-echo/1" in check.metadata["missing_items"].value


def test_embed_off_skips_embedding(resources, prompt_dir, db_url):
    write_prompt_set(prompt_dir, "qa", QA.replace("embed: on", "embed: off"))
    result = materialize(resources, "qa")
    assert result.success
    assert metadata(result, "response_embeddings")["embedded"] == 0
    assert count(db_url, modality="embedding") == 0


def test_targets_of_one_provider_share_its_concurrency_limit(db_url, prompt_dir, llm_server):
    # Two models on one OpenAI account: together they may have 2 calls in flight, not 2 each.
    write_prompt_set(
        prompt_dir,
        "pair",
        """
        name: pair
        prompts: [{id: a, text: "one"}, {id: b, text: "two"}, {id: c, text: "three"}]
        targets:
          - {provider: openai, model: gpt-4o-mini}
          - {provider: openai, model: gpt-4o}
        samples: 3
    """,
    )
    resources = make_resources(db_url, prompt_dir, llm_server.url)
    openai = ProviderSettings(
        api_key="sk-test-fake", base_url=llm_server.openai_base_url, max_concurrency=2
    )
    resources["llm"] = LLMProvidersResource(openai=openai, **FAST_RETRIES)
    # The first answer waits for a second request: two are in flight at once, whatever the
    # speed. The latency only gives a broken limit (2 per model) time to show a third.
    llm_server.hold(until=lambda requests: len(requests) >= 2, match="/chat/completions")
    llm_server.latency_s = 0.05
    result = materialize(resources, "pair")
    assert result.success
    assert llm_server.count("/chat/completions") == 18
    assert llm_server.max_in_flight == 2
