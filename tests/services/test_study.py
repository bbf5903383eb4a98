"""StudyService on SQLite and PostgreSQL: every figure checked against values computed by hand
from the fixture below."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from study_query_dagster.db import DatabaseConnection, GroupRepository, RawCallRepository
from study_query_dagster.services.pricing import PriceTable
from study_query_dagster.services.study import (
    TIME_SERIES_METRICS,
    StudyService,
    prompt_text,
    snippet,
    truncate,
)

T0 = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
LONG_PROMPT = "Ünïcødé 漢字 " * 10_000  # 110,000 characters


def chat(prompt, *, plain=False, system=None):
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": prompt}
    ]
    request = {"messages": messages, "params": {"temperature": 0.0}}
    if plain:
        request["prompt"] = prompt
    return request


def tokens(p, c):
    return {"prompt_tokens": p, "completion_tokens": c, "total_tokens": p + c}


def call(provider, model, status, at, latency, tok=None, prompt="q", answer="a", **extra):
    return {
        "provider": provider,
        "model": model,
        "status": status,
        "created_at": at,
        "latency_ms": latency,
        "tokens_json": tok,
        "request_json": extra.pop("request_json", chat(prompt)),
        "response_json": {"text": answer} if status == "success" else None,
        **extra,
    }


FIXTURE = {
    # openai/gpt-4o-mini: 3 successes + 1 failure, fully priced
    "c1": call("openai", "gpt-4o-mini", "success", T0, 100.0, tokens(1000, 500),
               request_json=chat("What is the capital of France?", plain=True), answer="Paris"),
    "c2": call("openai", "gpt-4o-mini", "success", T0 + timedelta(minutes=5), 200.0,
               tokens(2000, 1000), prompt="Name a prime number", answer="7"),
    "c3": call("openai", "gpt-4o-mini", "failed", T0 + timedelta(hours=1), 50.0,
               error_json={"message": "rate limited", "status_code": 429}),
    "c4": call("openai", "gpt-4o-mini", "success", T0 + timedelta(days=1), 400.0,
               tokens(100, 100), prompt=LONG_PROMPT, answer="long answer"),
    # hyperbolic/my-llama: not in the price table
    "c5": call("hyperbolic", "my-llama", "success", T0 + timedelta(hours=2), 300.0,
               tokens(10, 20), request_json=chat("Why is the sky blue?", system="Be terse.")),
    "c6": call("hyperbolic", "my-llama", "timeout", T0 + timedelta(days=1, hours=1), None),
    # a migrated v1 row: total tokens only, no model
    "c7": call("azure_openai_gpt-4", None, "success", T0 - timedelta(days=1), 1000.0,
               {"total_tokens": 42}, request_json={"prompt": "old question"},
               answer="old answer", metadata_json={"v1_id": 7}),
    # openai/gpt-4o: one priced call, one with a total only -> partial cost
    "c9": call("openai", "gpt-4o", "success", T0 + timedelta(hours=3), 10.0,
               tokens(1_000_000, 0)),
    "c10": call("openai", "gpt-4o", "success", T0 + timedelta(hours=4), 30.0,
                {"total_tokens": 99}),
    # an embedding call: excluded by the default modality filter
    "e1": call("openai", "text-embedding-3-small", "success", T0, 5.0,
               {"prompt_tokens": 5, "total_tokens": 5}, modality="embedding"),
}  # fmt: skip


@pytest.fixture
def study(db: DatabaseConnection):
    names = list(FIXTURE)
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        groups = GroupRepository(session)
        ids = dict(zip(names, repo.insert_raw_calls(FIXTURE.values()), strict=True))
        run = groups.create_group("run", "r1")
        groups.add_group_members(run, [ids[k] for k in ("c1", "c2", "c3", "c5")])
        prompt_set = groups.create_group("prompt_set", "ps")
        groups.add_group_members(prompt_set, [ids[k] for k in ("c1", "c2", "c3", "c5", "c4")])
    service = StudyService(db, PriceTable.load())
    service.ids, service.run, service.prompt_set = ids, run, prompt_set
    return service


def by_model(frame: pd.DataFrame) -> dict:
    return {
        (r.provider, r.model if isinstance(r.model, str) else None): r for r in frame.itertuples()
    }


def test_provider_comparison_matches_hand_computed(study):
    frame = study.get_provider_comparison()
    rows = by_model(frame)
    assert set(rows) == {
        ("openai", "gpt-4o-mini"), ("openai", "gpt-4o"), ("hyperbolic", "my-llama"),
        ("azure_openai_gpt-4", None),
    }  # fmt: skip
    mini = rows["openai", "gpt-4o-mini"]
    assert (mini.calls, mini.success, mini.failed, mini.timeout) == (4, 3, 1, 0)
    assert mini.success_rate == 0.75
    assert mini.avg_latency_ms == pytest.approx((100 + 200 + 400) / 3)
    assert mini.p50_latency_ms == pytest.approx(200)
    assert mini.p95_latency_ms == pytest.approx(200 + 0.9 * 200)  # position 2.9
    assert mini.avg_tokens == pytest.approx((1500 + 3000 + 200) / 3)  # the failure has none
    assert (mini.prompt_tokens, mini.completion_tokens, mini.total_tokens) == (3100, 1600, 4700)
    assert mini.estimated_cost_usd == pytest.approx((3100 * 0.15 + 1600 * 0.60) / 1e6)
    assert mini.cost_status == "complete"

    llama = rows["hyperbolic", "my-llama"]
    assert (llama.calls, llama.success, llama.timeout, llama.success_rate) == (2, 1, 1, 0.5)
    assert llama.p95_latency_ms == pytest.approx(300)
    assert pd.isna(llama.estimated_cost_usd) and llama.cost_status == "unknown"

    legacy = rows["azure_openai_gpt-4", None]
    assert legacy.total_tokens == 42
    assert pd.isna(legacy.estimated_cost_usd) and legacy.cost_status == "unknown"

    gpt4o = rows["openai", "gpt-4o"]
    assert gpt4o.estimated_cost_usd == pytest.approx(2.50)  # 1M input tokens at $2.50
    assert gpt4o.cost_status == "partial"


def test_comparison_filters_group_provider_date_and_modality(study):
    run = by_model(study.get_provider_comparison(group_id=study.run))
    assert {k: r.calls for k, r in run.items()} == {
        ("openai", "gpt-4o-mini"): 3, ("hyperbolic", "my-llama"): 1,
    }  # fmt: skip
    # the prompt set holds every run's calls, so it also sees c4
    prompt_set = by_model(study.get_provider_comparison(group_id=study.prompt_set))
    assert prompt_set["openai", "gpt-4o-mini"].calls == 4
    both = by_model(study.get_provider_comparison(group_id=[study.run, study.prompt_set]))
    assert both["openai", "gpt-4o-mini"].calls == 4

    only = study.get_provider_comparison(provider="hyperbolic")
    assert list(only["model"]) == ["my-llama"]

    window = (T0 + timedelta(minutes=30), T0 + timedelta(days=1))  # c3, c5, c9, c10, c4
    dated = by_model(study.get_provider_comparison(date_range=window))
    assert {k: r.calls for k, r in dated.items()} == {
        ("openai", "gpt-4o-mini"): 2, ("hyperbolic", "my-llama"): 1, ("openai", "gpt-4o"): 2,
    }  # fmt: skip
    naive = (window[0].replace(tzinfo=None), window[1].replace(tzinfo=None))  # naive = UTC
    assert study.get_provider_comparison(date_range=naive).equals(
        study.get_provider_comparison(date_range=window)
    )

    everything = by_model(study.get_provider_comparison(modality=None))
    assert everything["openai", "text-embedding-3-small"].calls == 1
    embeddings = study.get_provider_comparison(modality="embedding")
    assert list(embeddings["model"]) == ["text-embedding-3-small"]


def test_summary_stats_match_hand_computed(study):
    stats = study.get_summary_stats()
    assert stats["total_calls"] == 9
    assert stats["by_status"] == {"success": 7, "failed": 1, "timeout": 1, "cancelled": 0}
    assert stats["failures"] == 2
    assert stats["success_rate"] == pytest.approx(7 / 9)
    assert stats["first_call_at"] == T0 - timedelta(days=1)
    assert stats["last_call_at"] == T0 + timedelta(days=1, hours=1)
    assert stats["providers"] == ["azure_openai_gpt-4", "hyperbolic", "openai"]
    assert stats["models"] == ["gpt-4o", "gpt-4o-mini", "my-llama"]
    assert stats["total_tokens"] == 1500 + 3000 + 200 + 30 + 42 + 1_000_000 + 99
    latencies = [10, 30, 100, 200, 300, 400, 1000]
    assert stats["avg_latency_ms"] == pytest.approx(sum(latencies) / 7)
    assert stats["p50_latency_ms"] == pytest.approx(200)
    assert stats["p95_latency_ms"] == pytest.approx(400 + 0.7 * 600)  # position 6.7
    # known costs are summed, and the total says it is partial and why
    assert stats["estimated_cost_usd"] == pytest.approx(2.5 + (3100 * 0.15 + 1600 * 0.6) / 1e6)
    assert stats["cost_partial"] is True
    assert stats["unpriced_models"] == ["azure_openai_gpt-4", "hyperbolic/my-llama"]
    assert stats["partially_priced_models"] == ["openai/gpt-4o"]


def test_summary_of_fully_priced_and_of_nothing(study):
    priced = study.get_summary_stats(model="gpt-4o-mini")
    assert priced["cost_partial"] is False and priced["unpriced_models"] == []
    assert priced["estimated_cost_usd"] == pytest.approx((3100 * 0.15 + 1600 * 0.6) / 1e6)
    unpriced = study.get_summary_stats(provider="hyperbolic")
    assert unpriced["estimated_cost_usd"] is None and unpriced["cost_partial"] is True
    empty = study.get_summary_stats(provider="nobody")
    assert empty["total_calls"] == 0 and empty["success_rate"] is None
    assert empty["first_call_at"] is None and empty["p95_latency_ms"] is None
    assert empty["estimated_cost_usd"] is None and empty["cost_partial"] is False
    assert study.get_provider_comparison(provider="nobody").empty


def test_time_series_by_day(study):
    assert "p95_latency_ms" not in study.get_time_series_data("day").columns  # opt-in
    frame = study.get_time_series_data("day", metric=list(TIME_SERIES_METRICS))
    day = {(r.bucket.date().isoformat(), r.provider): r for r in frame.itertuples()}
    assert list(day) == [
        ("2025-12-31", "azure_openai_gpt-4"),
        ("2026-01-01", "hyperbolic"), ("2026-01-01", "openai"),
        ("2026-01-02", "hyperbolic"), ("2026-01-02", "openai"),
    ]  # fmt: skip
    assert str(frame["bucket"].dt.tz) == "UTC"
    openai = day["2026-01-01", "openai"]  # c1 c2 c3 c9 c10
    assert (openai.calls, openai.successes, openai.failures) == (5, 4, 1)
    assert openai.success_rate == pytest.approx(0.8)
    assert openai.total_tokens == 1500 + 3000 + 1_000_000 + 99
    assert openai.avg_latency_ms == pytest.approx((100 + 200 + 10 + 30) / 4)
    assert openai.p95_latency_ms == pytest.approx(100 + 0.85 * 100)  # of 10, 30, 100, 200
    timeout = day["2026-01-02", "hyperbolic"]
    assert (timeout.calls, timeout.failures, timeout.total_tokens) == (1, 1, 0)
    assert pd.isna(timeout.avg_latency_ms) and pd.isna(timeout.p95_latency_ms)


def test_time_series_by_hour_and_minute_and_metric_selection(study):
    hourly = study.get_time_series_data("hour", metric="calls", provider="openai")
    assert list(hourly.columns) == ["bucket", "provider", "calls"]
    first_day = hourly[hourly["bucket"].dt.date == T0.date()]
    assert [(b.hour, n) for b, n in zip(first_day["bucket"], first_day["calls"], strict=True)] == [
        (10, 2), (11, 1), (13, 1), (14, 1),
    ]  # fmt: skip
    minutes = study.get_time_series_data("minute", metric=["calls", "failures"], group_id=study.run)
    assert [(b.strftime("%H:%M"), p, n) for b, p, n in
            zip(minutes["bucket"], minutes["provider"], minutes["calls"], strict=True)] == [
        ("10:00", "openai", 1), ("10:05", "openai", 1), ("11:00", "openai", 1),
        ("12:00", "hyperbolic", 1),
    ]  # fmt: skip


def test_bad_arguments_are_named(study):
    with pytest.raises(ValueError, match="granularity must be one of day, hour, minute"):
        study.get_time_series_data("week")
    with pytest.raises(ValueError, match="metric must be one of .*'cost'"):
        study.get_time_series_data("day", metric="cost")
    with pytest.raises(ValueError, match="date_range starts after it ends"):
        study.get_summary_stats(date_range=(T0, T0 - timedelta(days=1)))
    with pytest.raises(ValueError, match="date_range bounds must be datetimes"):
        study.get_provider_comparison(date_range=("2026-01-01", None))
    with pytest.raises(ValueError, match="search term must be a non-empty string"):
        study.search_prompts("  ")
    with pytest.raises(TypeError):
        study.get_provider_comparison(colour="red")


def test_recent_inferences_newest_first_truncated(study):
    recent = study.get_recent_inferences(3, truncate_at=50)
    ids = study.ids
    assert list(recent["id"]) == [ids["c6"], ids["c4"], ids["c10"]]
    long_row = recent[recent["id"] == ids["c4"]].iloc[0]
    assert long_row["prompt"] == LONG_PROMPT[:49] + "…" and len(long_row["prompt"]) == 50
    assert long_row["answer"] == "long answer"
    assert long_row["total_tokens"] == 200
    timeout_row = recent.iloc[0]
    assert timeout_row["status"] == "timeout" and pd.isna(timeout_row["answer"])
    failed = study.get_recent_inferences(10, group_id=study.run)
    assert list(failed["id"]) == [ids["c5"], ids["c3"], ids["c2"], ids["c1"]]
    assert failed.set_index("id").loc[ids["c3"], "error"] == "rate limited"
    assert failed.set_index("id").loc[ids["c1"], "prompt"] == "What is the capital of France?"
    assert failed.set_index("id").loc[ids["c2"], "prompt"] == "Name a prime number"
    legacy = study.get_recent_inferences(1, provider="azure_openai_gpt-4").iloc[0]
    assert (legacy["prompt"], legacy["answer"]) == ("old question", "old answer")


def test_search_prompts_and_answers(study):
    ids = study.ids
    paris = study.search_prompts("PARIS")
    assert list(paris["id"]) == [ids["c1"]] and paris.iloc[0]["matched_in"] == "answer"
    capital = study.search_prompts("capital of")
    assert capital.iloc[0]["matched_in"] == "prompt"
    assert capital.iloc[0]["snippet"] == "What is the capital of France?"
    assert list(study.search_prompts("prime")["id"]) == [ids["c2"]]
    assert study.search_prompts("terse").iloc[0]["matched_in"] == "request"  # system message
    unicode = study.search_prompts("漢字", truncate_at=20)
    assert list(unicode["id"]) == [ids["c4"]]
    assert len(unicode.iloc[0]["prompt"]) == 20 and len(unicode.iloc[0]["snippet"]) < 200
    assert study.search_prompts("answer", provider="openai").empty is False
    assert list(study.search_prompts("answer", provider="azure_openai_gpt-4")["id"]) == [ids["c7"]]
    assert study.search_prompts("capital", group_id=study.run)["id"].tolist() == [ids["c1"]]
    assert study.search_prompts("capital", date_range=(T0 + timedelta(hours=1), None)).empty
    assert len(study.search_prompts("a", limit=2)) == 2


@pytest.mark.parametrize("backend", ["postgresql"], indirect=True)
def test_postgres_buckets_are_utc_whatever_the_session_time_zone(db_url):
    tokyo = DatabaseConnection(db_url, connect_args={"options": "-c timezone=Asia/Tokyo"})
    late = datetime(2026, 1, 1, 23, 30, tzinfo=timezone.utc)  # already Jan 2 in Tokyo
    with tokyo.session_scope() as session:
        RawCallRepository(session).insert_raw_calls([call("openai", "m", "success", late, 1.0)])
    frame = StudyService(tokyo, PriceTable.load()).get_time_series_data("day")
    tokyo.dispose()
    assert [b.isoformat() for b in frame["bucket"]] == ["2026-01-01T00:00:00+00:00"]


def test_text_helpers():
    assert prompt_text({"prompt": "p", "messages": [{"role": "user", "content": "m"}]}) == "p"
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "image_url"}]}]}  # fmt: skip
    assert prompt_text(parts) == "a"
    assert prompt_text({"messages": []}) is None and prompt_text(None) is None
    assert truncate("abcdef", 4) == "abc…" and truncate("abc", 4) == "abc"
    assert snippet("x" * 100 + "needle" + "y" * 100, "NEEDLE", width=3) == "…xxxneedleyyy…"


def target_call(target, prompt_set, params, status, latency, tok=None, provider="offline",
                model="offline-echo"):  # fmt: skip
    row = call(provider, model, status, T0, latency, tok,
               metadata_json={"prompt_set": prompt_set, "target": target})  # fmt: skip
    row["request_json"] = {"messages": [{"role": "user", "content": "q"}], "params": params}
    return row


TARGET_FIXTURE = [
    # set "caps": one model at two temperatures is two targets, plus a priced target
    # samples are sent with seed + i: still one target
    target_call("echo-cold", "caps", {"temperature": 0, "seed": 7}, "success", 10.0, tokens(10, 5)),
    target_call("echo-cold", "caps", {"temperature": 0, "seed": 8}, "success", 30.0, tokens(10, 7)),
    target_call("echo-warm", "caps", {"temperature": 1}, "success", 20.0, tokens(10, 9)),
    target_call("echo-warm", "caps", {"temperature": 1}, "failed", 5.0),
    target_call(
        "mini",
        "caps",
        {"max_tokens": 20, "temperature": 0.5},
        "success",
        100.0,
        tokens(1000, 500),
        provider="openai",
        model="gpt-4o-mini",
    ),  # fmt: skip
    # another set using the label echo-cold with other settings
    target_call("echo-cold", "other", {"temperature": 0.5}, "success", 50.0, tokens(1, 1)),
    # an ad-hoc call: no set, no target
    call("offline", "offline-echo", "success", T0, 70.0, tokens(2, 2)),
]


def test_target_comparison_keeps_targets_of_one_model_apart(db: DatabaseConnection):
    with db.session_scope() as session:
        repo, groups = RawCallRepository(session), GroupRepository(session)
        ids = repo.insert_raw_calls(TARGET_FIXTURE)
        caps = groups.create_group("prompt_set", "caps")
        groups.add_group_members(caps, ids[:5])
    study = StudyService(db, PriceTable.load())

    frame = study.get_target_comparison(group_id=caps)
    assert list(frame["target"]) == ["echo-cold", "echo-warm", "mini"]
    rows = {r.target: r for r in frame.itertuples()}
    cold, warm, mini = rows["echo-cold"], rows["echo-warm"], rows["mini"]
    assert (cold.provider, cold.model) == ("offline", "offline-echo")
    assert cold.params == "seed=7..8, temperature=0"  # the seeds the samples were sent with
    assert warm.params == "temperature=1"
    assert mini.params == "max_tokens=20, temperature=0.5"
    assert (cold.calls, cold.success, cold.success_rate) == (2, 2, 1.0)
    assert cold.p50_latency_ms == pytest.approx(20.0)  # of 10 and 30
    assert cold.p95_latency_ms == pytest.approx(10 + 0.95 * 20)
    assert (warm.calls, warm.failed, warm.success_rate) == (2, 1, 0.5)
    assert warm.p50_latency_ms == pytest.approx(20.0)  # the failure's latency is left out
    assert (cold.total_tokens, warm.total_tokens) == (32, 19)
    assert mini.estimated_cost_usd == pytest.approx((1000 * 0.15 + 500 * 0.60) / 1e6)
    assert mini.cost_status == "complete"

    # across sets: equal labels of different sets stay apart; calls outside a set have none
    everything = study.get_target_comparison(per_prompt_set=True)
    keys = [
        tuple(None if pd.isna(v) else v for v in (r.prompt_set, r.target, r.params))
        for r in everything.itertuples()
    ]
    assert keys == [
        (None, None, "temperature=0"),
        ("caps", "echo-cold", "seed=7..8, temperature=0"),
        ("caps", "echo-warm", "temperature=1"),
        ("caps", "mini", "max_tokens=20, temperature=0.5"),
        ("other", "echo-cold", "temperature=0.5"),
    ]
    adhoc = everything.iloc[0]
    assert (adhoc["provider"], adhoc["model"], adhoc["calls"]) == ("offline", "offline-echo", 1)
    # the per-model view merges what the target view keeps apart
    per_model = by_model(study.get_provider_comparison())
    assert per_model["offline", "offline-echo"].calls == 6


def test_count_prompt_matches_is_the_total_beyond_the_limit(study):
    assert study.count_prompt_matches("a") > len(study.search_prompts("a", limit=2)) == 2
    assert study.count_prompt_matches("capital") == len(study.search_prompts("capital")) == 1
    assert study.count_prompt_matches("capital", group_id=study.run) == 1
    assert study.count_prompt_matches("no such words anywhere") == 0
    with pytest.raises(ValueError, match="search term must be a non-empty string"):
        study.count_prompt_matches(" ")
