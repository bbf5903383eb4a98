"""A 500-call run through a storm of faults at the fake server: 429s with Retry-After, 5xx
bursts, hangs past the client timeout, dropped connections and malformed bodies.

Each item gets a scripted sequence of faults before the server answers it. Most recover within
the retry policy; a few are scripted to fail every attempt, so the first run fails and a
re-execution from failure completes it. Checked at the server (requests per item, their
timestamps) and in the app DB (one row per item and execution, with the right status)."""

from __future__ import annotations

from collections import Counter, defaultdict

import dagster as dg
import pytest

from tests.support.drills import (
    AZURE_DEPLOYMENT,
    OPENAI_MODEL,
    ScriptedFaults,
    call_key,
    drill_prompt_set,
    run_calls,
    step_failure,
    study_job_env,
)
from tests.support.fake_llm_server import Fault
from tests.support.pipeline import reconstructable_study_job, write_prompt_set

MAX_RETRIES = 2  # three attempts per call
TIMEOUT_S = 2.0
POLICY = {"max_retries": MAX_RETRIES, "initial_wait_s": 0.01, "max_wait_s": 0.05,
          "timeout_s": TIMEOUT_S}  # fmt: skip


def rate_limited(seconds: float, *, in_ms: bool = False) -> Fault:
    if in_ms:
        return Fault(status=429, retry_after_ms=int(seconds * 1000))
    return Fault(status=429, retry_after=seconds)


HANG = Fault(kind="hang", hang_s=TIMEOUT_S + 3)
DROP = Fault(kind="drop")
BAD = Fault(kind="malformed")

# (status, error type) a call ends with when its last attempt met this fault.
OUTCOME = {"status": ("failed", "server_error"), "hang": ("timeout", "timeout"),
           "drop": ("failed", "connection"), "malformed": ("failed", "malformed_response")}  # fmt: skip


def is_rate_limit(fault: Fault | None) -> bool:
    return fault is not None and fault.kind == "status" and fault.status == 429


def retry_after(fault: Fault) -> float:
    return fault.retry_after if fault.retry_after is not None else fault.retry_after_ms / 1000


def outcome_of(fault: Fault) -> tuple[str, str]:
    return ("failed", "rate_limit") if is_rate_limit(fault) else OUTCOME[fault.kind]


def error_type_of(fault: Fault) -> str:
    return outcome_of(fault)[1]


def script_for(n: int) -> list[Fault]:
    """Faults before item n is answered (n = 2 x prompt + target)."""
    five = Fault(status=(500, 502, 503)[n % 3])
    if n < 150:  # the storm: the first wave of every target is rate limited
        first = rate_limited(0.3 if n % 2 else 0.5, in_ms=n % 4 == 1)
        return [first, rate_limited(0.2)] if n % 5 == 0 else [first]
    if n < 250:  # 5xx bursts
        return [five] * (1 + n % 2)
    if n < 256:
        return [HANG]
    if n < 300:
        return [DROP] * (1 + n % 2)
    if n < 340:
        return [BAD]
    if n < 380:  # mixed
        return [(rate_limited(0.2), five, DROP, BAD)[n % 4], (five, BAD, DROP, HANG)[n % 4]]
    exhausted = {  # every attempt fails: retries run out
        400: [rate_limited(0.2)] * 3,
        401: [five] * 3,
        402: [HANG] * 3,
        403: [DROP] * 3,
        404: [BAD] * 2,  # a malformed body is retried once only
        405: [rate_limited(0.1), five, DROP],
        406: [DROP, BAD, five],
    }
    return exhausted.get(n, [])


def attempts_of(script: list[Fault]) -> int:
    """Attempts the RetryPolicy makes against this script: at most max_retries + 1, and a
    malformed body retried once only (it is usually deterministic)."""
    malformed = 0
    for attempt, fault in enumerate(script, start=1):
        malformed += fault.kind == "malformed"
        if attempt == MAX_RETRIES + 1 or malformed > 1:
            return attempt  # failed for good
    return len(script) + 1  # the script ran out: the next attempt was answered


def item_keys(prompts: int) -> list[str]:
    """Server keys of the items, in the order of `script_for`'s n."""
    keys = []
    for i in range(prompts):
        text = f"drill question {i:04d} of storm"
        keys += [f"{OPENAI_MODEL}|{text}", f"{AZURE_DEPLOYMENT}|{text}"]
    return keys


@pytest.mark.slow
def test_every_call_captured_once_through_a_fault_storm(
    db_url, prompt_dir, llm_server, monkeypatch
):
    keys = item_keys(250)
    scripts = {key: script_for(n) for n, key in enumerate(keys)}
    exhausted = {k for k, s in scripts.items() if attempts_of(s) <= len(s)}
    assert len(exhausted) == 7 and sum(1 for s in scripts.values() if s) > 300
    faults = ScriptedFaults(scripts)
    llm_server.fault_fn = faults
    write_prompt_set(prompt_dir, "storm", drill_prompt_set("storm", 250))
    study_job_env(monkeypatch, db_url, prompt_dir, llm_server.url, **POLICY)
    job = reconstructable_study_job()

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("prompt_sets", ["storm"])
        first = dg.execute_job(job, instance, tags={"dagster/partition": "storm"})
        assert not first.success
        assert "7 of 500 items did not succeed" in step_failure(first, "inference_run")
        first_requests = len(llm_server.requests)

        # --- the server's view of the first execution --------------------------------------
        for key, script in scripts.items():
            seen = faults.seen[key]
            # Retries stay within policy: never more than max_retries + 1 attempts.
            assert len(seen) == attempts_of(script) <= MAX_RETRIES + 1, key
            assert [s.fault for s in seen[: len(script)]] == script[: len(seen)], key
            # Retry-After honoured: the next attempt came at least that long after the 429.
            for before, after in zip(seen, seen[1:], strict=False):
                if is_rate_limit(before.fault):
                    wait = retry_after(before.fault)
                    assert after.request.at - before.request.at >= wait, key

        # --- the app DB's view: one row per item, with the status its attempts earned ----------
        group = f"storm/{first.run_id}"
        calls = run_calls(db_url, group)
        by_key = defaultdict(list)
        for call in calls:
            by_key[call_key(call)].append(call)
        assert set(by_key) == set(keys) and len(calls) == 500
        for key, script in scripts.items():
            [call] = by_key[key]
            meta = call.metadata_json
            assert meta["attempts"] == len(faults.seen[key]), key
            if key in exhausted:
                last = script[attempts_of(script) - 1]
                assert (call.status, call.error_json["type"]) == outcome_of(last), key
                errors = call.error_json["attempts"]
            else:
                assert call.status == "success", (key, call.error_json)
                assert call.response_json["text"].startswith("echo: drill question")
                errors = meta.get("attempt_errors", [])
            expected = [error_type_of(f) for f in script][: attempts_of(script)]
            assert [e["type"] for e in errors] == expected, key
            for entry, fault in zip(errors[:MAX_RETRIES], script, strict=False):
                if is_rate_limit(fault):  # it waited what it was told
                    assert entry["waited_s"] == retry_after(fault)
        # Every request the server saw is one attempt of one captured call.
        assert sum(c.metadata_json["attempts"] for c in calls) == first_requests

        # --- re-execution from failure sends only the 7 exhausted items, once each ----------
        options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
        second = dg.execute_job(
            job, instance, reexecution_options=options, tags=first.dagster_run.tags
        )
        assert second.success
    assert len(llm_server.requests) - first_requests == len(exhausted)
    # Each exhausted item got exactly one more attempt; nothing else was sent again.
    again = {k for k, seen in faults.seen.items() if len(seen) > attempts_of(scripts[k])}
    assert again == exhausted
    assert all(len(faults.seen[k]) == attempts_of(scripts[k]) + 1 for k in exhausted)
    # No success was ever repeated: one normal answer per item at the server.
    assert faults.successes() == Counter({key: 1 for key in keys})

    calls = run_calls(db_url, group)  # the same run group holds both executions
    assert len(calls) == 500 + len(exhausted)
    successes = Counter(call_key(c) for c in calls if c.status == "success")
    assert successes == Counter({key: 1 for key in keys})
    second_rows = [c for c in calls if c.metadata_json["dagster_run_id"] == second.run_id]
    assert {call_key(c) for c in second_rows} == exhausted
    assert all(c.status == "success" and c.metadata_json["attempts"] == 1 for c in second_rows)
    run = next(
        e.materialization.metadata
        for e in second.get_asset_materialization_events()
        if e.asset_key.path == ["inference_run"]
    )
    assert run["resumed_items_skipped"].value == 500 - len(exhausted)
    assert run["successes"].value == 500
