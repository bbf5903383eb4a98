"""Re-executing a run resumes it: successful calls are not repeated (counted at the server),
only the items that did not succeed are sent again, and the run keeps the prompt set it started
with even if the file changed in between. A target that fails does not hold back the others:
their answers are materialized and embedded, and the failures show as a red check (or, when
nothing succeeded at all, a failed step)."""

import dagster as dg

from tests.support.fake_llm_server import Fault
from tests.support.pipeline import reconstructable_study_job, write_prompt_set

SET = """
    name: resume
    prompts:
      - {id: a, text: "alpha question"}
      - {id: b, text: "beta question"}
      - {id: c, text: "gamma question"}
      - {id: d, text: "delta question"}
    targets:
      - {provider: openai, model: gpt-4o-mini}
    samples: 4
"""

TWO_TARGETS = """
    name: split
    prompts:
      - {id: a, text: "alpha question"}
      - {id: b, text: "beta question"}
    targets:
      - {provider: openai, model: gpt-4o-mini}
      - {provider: azure, deployment: dep-down}
    samples: 2
    embed: on
"""


def study_env(monkeypatch, db_url, prompt_dir, llm_server) -> None:
    monkeypatch.setenv("SQD_TEST_DB_URL", db_url)
    monkeypatch.setenv("SQD_TEST_PROMPT_DIR", str(prompt_dir))
    monkeypatch.setenv("SQD_TEST_LLM_URL", llm_server.url)


def materialized(result, asset: str) -> dict:
    [event] = [e for e in result.get_asset_materialization_events() if e.asset_key.path == [asset]]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def check(result, name: str) -> dg.AssetCheckEvaluation:
    return next(c for c in result.get_asset_check_evaluations() if c.check_name == name)


def test_reexecution_sends_only_unfinished_items(db_url, prompt_dir, llm_server, monkeypatch):
    write_prompt_set(prompt_dir, "resume", SET)
    study_env(monkeypatch, db_url, prompt_dir, llm_server)

    # "beta" is down for the whole first run (every attempt gets a 503); "delta" is refused
    # by the content filter (an answer to study, not a failure).
    def first_faults(request):
        if "beta" in str(request.body):
            return Fault(status=503)
        if "delta" in str(request.body):
            return Fault(kind="content_filter")
        return None

    llm_server.fault_fn = first_faults
    job = reconstructable_study_job()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["resume"])
        first = dg.execute_job(job, instance, tags={"dagster/partition": "resume"})
        # The answers are materialized; the four beta items show as a red check.
        assert first.success
        captured = check(first, "every_request_captured")
        assert not captured.passed and captured.severity == dg.AssetCheckSeverity.ERROR
        assert captured.metadata["failed"].value == 4
        assert "b/openai-gpt-4o-mini/3" in captured.metadata["failed_items"].value
        assert "4 of 16 items have no answer yet" in captured.description
        sent_first = llm_server.count("/chat/completions", succeeded=True)
        assert sent_first == 8  # alpha and gamma answered

        llm_server.fault_fn = None
        # The set gains a prompt and is stored again before the re-execution, which still
        # finishes the version its run started with.
        edited = SET.replace(
            "    targets:", '      - {id: e, text: "epsilon question"}\n    targets:'
        )
        write_prompt_set(prompt_dir, "resume", edited)
        stored = dg.execute_job(
            job,
            instance,
            tags={"dagster/partition": "resume"},
            asset_selection=[dg.AssetKey("prompt_set")],
        )
        assert stored.success
        requests_before = len(llm_server.requests)
        # As the UI's "Re-execute" does: the same run again, with the parent run's tags.
        options = dg.ReexecutionOptions(parent_run_id=first.run_id)
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        assert second.success
        resent = [r.body["messages"][-1]["content"] for r in llm_server.requests[requests_before:]]
        # the items that did not succeed, each once; no success is repeated
        assert sorted(resent) == ["beta question"] * 4 + ["delta question"] * 4

        run = materialized(second, "inference_run")
        assert run["resumed_items_skipped"] == 8 and run["items_sent"] == 8
        # One run group holds both executions: 8 first successes, 4 refusals, 4 failed rows,
        # then 8 successes.
        assert run["successes"] == 16
        assert run["failures_by_type"] == {"server_error": 4, "content_filter": 4}
        assert check(second, "every_request_captured").passed


def test_a_failed_target_does_not_hold_back_the_others(db_url, prompt_dir, llm_server, monkeypatch):
    write_prompt_set(prompt_dir, "split", TWO_TARGETS)
    study_env(monkeypatch, db_url, prompt_dir, llm_server)
    # The Azure deployment's server is down for the whole first run.
    llm_server.fault_fn = lambda r: Fault(status=503) if "dep-down" in r.path else None
    job = reconstructable_study_job()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["split"])
        first = dg.execute_job(job, instance, tags={"dagster/partition": "split"})
        assert first.success
        assert materialized(first, "inference_run")["successes"] == 4
        # The OpenAI target's four answers are embedded in this very run.
        embedded = materialized(first, "response_embeddings")
        assert (embedded["answers"], embedded["embedded"]) == (4, 4)
        assert check(first, "every_response_embedded").passed
        captured = check(first, "every_request_captured")
        assert not captured.passed and captured.metadata["failed"].value == 4

        llm_server.fault_fn = None
        before = len(llm_server.requests)
        options = dg.ReexecutionOptions(parent_run_id=first.run_id)
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        chat = [r for r in llm_server.requests[before:] if r.kind == "chat"]
        assert second.success and {r.path for r in chat} == {
            "/openai/deployments/dep-down/chat/completions"
        }
        assert len(chat) == 4  # only the failed target's items
        embedded = materialized(second, "response_embeddings")
        assert (embedded["answers"], embedded["embedded"]) == (8, 8)
        assert check(second, "every_request_captured").passed


def test_a_run_where_nothing_succeeded_fails_its_step(db_url, prompt_dir, llm_server, monkeypatch):
    write_prompt_set(prompt_dir, "resume", SET)
    study_env(monkeypatch, db_url, prompt_dir, llm_server)
    llm_server.fault_fn = lambda r: Fault(status=503)
    job = reconstructable_study_job()
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["resume"])
        first = dg.execute_job(job, instance, tags={"dagster/partition": "resume"})
        assert not first.success
        failure = next(e for e in first.all_events if e.event_type_value == "STEP_FAILURE")
        assert failure.step_key == "inference_run.send_shard[shard_0]"  # the set's one shard
        assert "none of the 16 items succeeded" in str(failure.event_specific_data.error)
        llm_server.fault_fn = None
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        assert second.success
        assert materialized(second, "inference_run")["items_sent"] == 16
