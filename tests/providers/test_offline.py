"""OfflineProvider: deterministic, plainly offline, and able to simulate failures."""

import time

import pytest

from study_query_dagster.providers import OfflineProvider, ProviderError


async def test_reply_is_marked_deterministic_and_counts_words():
    provider = OfflineProvider()
    first = await provider.complete("What is the capital of France?")
    again = await OfflineProvider().complete("What is the capital of France?")
    assert first.text == again.text
    assert first.text.startswith("[offline]")
    assert first.provider == "offline" and first.model == "offline-echo"
    assert first.prompt_tokens == 6
    assert first.completion_tokens == len(first.text.split())
    assert first.tokens == first.prompt_tokens + first.completion_tokens
    assert first.finish_reason == "stop"


async def test_reply_depends_on_messages_params_and_sample_index():
    provider = OfflineProvider(model="offline-x")
    base = await provider.complete("q")
    assert (await provider.complete("q", temperature=1.0)).text != base.text
    assert (await provider.complete("q", sample_index=1)).text != base.text
    assert (await provider.complete("q", sample_index=1)).text != (
        await provider.complete("q", sample_index=2)
    ).text
    assert (await provider.complete("q2")).text != base.text
    assert base.model == "offline-x"
    truncated = await provider.complete("q", max_tokens=2)
    assert truncated.finish_reason == "length" and truncated.completion_tokens == 2


async def test_temperature_zero_answers_every_sample_and_seed_alike():
    provider = OfflineProvider()
    greedy = [
        await provider.complete("q", temperature=0, seed=7 + i, sample_index=i, logprobs=True)
        for i in range(3)
    ]
    assert len({r.text for r in greedy}) == 1
    assert len({str(r.logprobs) for r in greedy}) == 1
    assert "(sample" not in greedy[0].text
    # other parameters and the messages still change the answer
    assert (await provider.complete("q", temperature=0, max_tokens=9)).text != greedy[0].text
    assert (await provider.complete("q2", temperature=0)).text != greedy[0].text
    warm = [await provider.complete("q", temperature=0.7, sample_index=i) for i in range(3)]
    assert len({r.text for r in warm}) == 3


async def test_simulated_failures_are_deterministic_and_typed():
    async def outcomes(seed):
        provider = OfflineProvider(failure_rate=0.5, seed=seed)
        out = []
        for i in range(40):
            try:
                await provider.complete(f"prompt {i % 10}")
                out.append("ok")
            except ProviderError as error:
                assert error.provider == "offline" and error.retryable
                assert error.error_type in {"rate_limit", "server_error", "timeout"}
                assert error.status_code in {429, 503, None}
                out.append(error.error_type)
        return out

    first = await outcomes(seed=1)
    assert first == await outcomes(seed=1)
    assert first != await outcomes(seed=2)
    assert "ok" in first and len(set(first)) >= 3  # successes and several failure kinds


async def test_always_failing_and_latency():
    provider = OfflineProvider(failure_rate=1.0, failure_kinds=("rate_limit",), retry_after_s=0.2)
    with pytest.raises(ProviderError) as caught:
        await provider.complete("x")
    assert caught.value.status_code == 429 and caught.value.retry_after == 0.2
    slow = OfflineProvider(latency_s=0.2)
    started = time.perf_counter()
    reply = await slow.complete("x")
    assert time.perf_counter() - started >= 0.2 and reply.latency_ms >= 200


def test_bad_drill_settings_are_refused():
    with pytest.raises(ValueError, match="failure_rate"):
        OfflineProvider(failure_rate=1.5)
    with pytest.raises(ValueError, match="failure_kinds"):
        OfflineProvider(failure_kinds=("meteor",))


async def test_scripted_answers_follow_the_quota_by_sample_index():
    provider = OfflineProvider()
    quota = {"Canberra": 7, "Sydney": 3}
    answers = [
        (await provider.complete("capital?", sample_index=i, offline_answers=quota)).text
        for i in range(10)
    ]
    assert answers == ["Canberra"] * 7 + ["Sydney"] * 3
    again = await provider.complete("capital?", sample_index=10, offline_answers=quota)
    assert again.text == "Canberra"  # past the quota: it cycles
    first = await provider.complete("capital?", offline_answers=quota)
    assert first.text == "Canberra" and first.finish_reason == "stop"
    assert first.completion_tokens == 1


async def test_scripted_answers_do_not_depend_on_the_order_written():
    """Most frequent first, ties in code-point order: a prompt set stored as PostgreSQL JSONB
    comes back with its keys in another order, and must still send the same answers."""
    provider = OfflineProvider()

    async def answers(quota):
        return [
            (await provider.complete("q", sample_index=i, offline_answers=quota)).text
            for i in range(sum(quota.values()))
        ]

    written = {"Sydney": 1, "Mars": 2, "Canberra": 3, "Jupiter": 2}
    expected = ["Canberra"] * 3 + ["Jupiter"] * 2 + ["Mars"] * 2 + ["Sydney"]
    assert await answers(written) == expected
    assert await answers(dict(reversed(written.items()))) == expected


@pytest.mark.parametrize("quota", [{}, {"Canberra": 0}, ["Canberra"], {"Canberra": "7"}])
async def test_malformed_scripts_are_refused(quota):
    with pytest.raises(ValueError, match="offline_answers must map answers to positive counts"):
        await OfflineProvider().complete("q", offline_answers=quota)
