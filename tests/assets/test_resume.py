"""Re-executing a failed run resumes it: successful calls are not repeated (counted at the
server), only the items that did not succeed are sent again, and the run keeps the prompt set
it started with even if the file changed in between."""

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


def test_reexecution_from_failure_sends_only_unfinished_items(
    db_url, prompt_dir, llm_server, monkeypatch
):
    write_prompt_set(prompt_dir, "resume", SET)
    monkeypatch.setenv("SQD_TEST_DB_URL", db_url)
    monkeypatch.setenv("SQD_TEST_PROMPT_DIR", str(prompt_dir))
    monkeypatch.setenv("SQD_TEST_LLM_URL", llm_server.url)

    # "beta" is down for the whole first run (every attempt gets a 503); "delta" is refused
    # by the content filter (an answer: alone it would not fail the run).
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
        assert not first.success
        failure = next(e for e in first.all_events if e.event_type_value == "STEP_FAILURE")
        assert "4 of 16 items did not succeed" in str(failure.event_specific_data.error)
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
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        # As the UI does, the re-execution carries the parent run's tags (its partition).
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        assert second.success
        resent = [r.body["messages"][-1]["content"] for r in llm_server.requests[requests_before:]]
        # the items that did not succeed, each once; no success is repeated
        assert sorted(resent) == ["beta question"] * 4 + ["delta question"] * 4

        run = next(
            e.materialization.metadata
            for e in second.get_asset_materialization_events()
            if e.asset_key.path == ["inference_run"]
        )
        assert run["resumed_items_skipped"].value == 8 and run["items_sent"].value == 8
        # One run group holds both executions: 8 first successes, 4 refusals, 4 failed rows,
        # then 8 successes.
        assert run["successes"].value == 16
        assert run["failures_by_type"].value == {"server_error": 4, "content_filter": 4}
        checks = {c.check_name: c.passed for c in second.get_asset_check_evaluations()}
        assert checks["every_request_captured"]
