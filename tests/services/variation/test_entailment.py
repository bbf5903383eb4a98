"""The `entailment` strategy with the offline provider as a scripted judge, called through the
real InferenceService: the strict and non-strict truth tables, the greedy assignment (an answer
once assigned never moves), the call bound, caching, and capture in the `entailment` group."""

import itertools
import random

import pytest

from study_query_dagster.db import GroupRepository, RawCall, RawCallRepository
from study_query_dagster.providers.offline import OfflineProvider
from study_query_dagster.services.inference import InferenceService
from study_query_dagster.services.variation import Cell
from study_query_dagster.services.variation.cells import Answer
from study_query_dagster.services.variation.classes import classify_each
from study_query_dagster.services.variation.entailment import EntailmentStrategy
from study_query_dagster.services.variation.judge import ENTAILMENT_GROUP, InferenceJudge

JUDGE = {"provider": "offline", "model": "offline-judge", "params": {}}
QUESTION = "What is the capital of Australia?"
E, N, C = "entailment", "neutral", "contradiction"


class Judged:
    """A strategy over a fresh InferenceService judge (closed on exit)."""

    def __init__(self, script, *, strict=True, db=None, group_id=None):
        self.service = InferenceService(
            OfflineProvider("offline-judge"), db, max_retries=0, max_retry_after=1.0
        )
        self.judge = InferenceJudge(self.service, {"offline_judge": script}, group_id=group_id)
        self.strategy = EntailmentStrategy(JUDGE, self.judge, strict=strict)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.service.aclose()

    @property
    def calls(self) -> int:
        return self.service.provider_calls

    async def labels(self, texts, question=QUESTION):
        return list((await self.strategy.partition(texts, question)).labels)


# Every pair of verdicts (P => Q, Q => P), and whether P and Q are one answer.
STRICT = {(f, b): (f, b) == (E, E) for f in (E, N, C) for b in (E, N, C)}
NON_STRICT = {(f, b): C not in (f, b) and (f, b) != (N, N) for f in (E, N, C) for b in (E, N, C)}


@pytest.mark.parametrize(("strict", "table"), [(True, STRICT), (False, NON_STRICT)])
async def test_truth_tables(strict, table):
    for (forward, backward), same in table.items():
        script = {"verdicts": [["P", "Q", forward], ["Q", "P", backward]]}
        async with Judged(script, strict=strict) as judged:
            assert await judged.labels(["P", "Q"]) == ([0, 0] if same else [0, 1])
            # A decided first direction spares the second: strict stops on anything but
            # entailment, non-strict on a contradiction.
            stops = forward != E if strict else forward == C
            assert judged.calls == (1 if stops else 2), (forward, backward)


CAPITALS = {
    "meanings": {
        "Canberra": "au",
        "It is Canberra.": "au",
        "The capital is Canberra": "au",
        "Sydney": "syd",
        "Melbourne": "mel",
    }
}
ANSWERS = [
    "Canberra",
    "canberra.",
    "It is Canberra.",
    "Sydney",
    "Canberra",
    "Melbourne",
    "Sydney!",
    "The capital is Canberra",
]


async def test_greedy_classes_and_the_call_bound():
    async with Judged(CAPITALS) as judged:
        partition = await judged.strategy.partition(ANSWERS, QUESTION)
        assert list(partition.labels) == [0, 0, 0, 1, 0, 2, 1, 0]
        assert partition.representatives == (0, 3, 5)  # the most frequent raw text per class
        # "canberra." and "Sydney!" normalise to earlier answers: never sent. The rest meet
        # the founders in order: It is Canberra (2 calls, joins), Sydney (1: contradiction),
        # Melbourne (1 + 1), The capital is Canberra (2, joins).
        assert judged.calls == 7
        n, k = len(ANSWERS), partition.num_classes
        assert judged.calls <= 2 * n * k
        assert judged.judge.usage() == {
            "judge_requests": 7,
            "judge_provider_calls": 7,
            "judge_unparsed_replies": 0,
        }


async def test_the_bound_holds_when_every_answer_differs():
    texts = [f"answer {i}" for i in range(10)]  # folded apart: `otherwise` (neutral)
    async with Judged(True) as judged:
        assert await judged.labels(texts) == list(range(10))
        # answer i meets i founders, one call each (neutral stops a strict comparison)
        assert judged.calls == sum(range(10)) <= 2 * 10 * 10
    async with Judged(True, strict=False) as judged:
        assert await judged.labels(texts) == list(range(10))
        assert judged.calls == 2 * sum(range(10))  # neutral both ways: two calls per pair


async def test_equal_and_empty_answers_are_never_sent():
    async with Judged(True) as judged:
        assert await judged.labels(["Yes.", "yes", "YES!"]) == [0, 0, 0]
        assert await judged.labels(["...", "Canberra", "", "Canberra."]) == [0, 1, 0, 1]
        assert judged.calls == 0


async def test_an_assigned_answer_never_moves():
    # Q entails P both ways and R both ways, but P and R contradict: R meets P (the founder of
    # Q's class), not Q, and founds its own class; Q stays where it was put.
    script = {
        "verdicts": [["P", "Q", E], ["Q", "P", E], ["Q", "R", E], ["R", "Q", E]],
        "otherwise": C,
    }
    async with Judged(script) as judged:
        assert await judged.labels(["P", "Q", "R"]) == [0, 0, 1]
        assert await judged.labels(["P", "Q"]) == [0, 0]
        # The order decides: with Q first, P and R both meet Q and share its class.
        assert await judged.labels(["Q", "R", "P"]) == [0, 0, 0]

    # Any judge, however inconsistent: the classes of a prefix are the prefix of the classes.
    rng = random.Random(7)
    texts = [f"t{i}" for i in range(9)] * 2
    verdicts = [[a, b, rng.choice((E, E, N, C))] for a, b in itertools.permutations(texts[:9], 2)]
    for strict in (True, False):
        async with Judged({"verdicts": verdicts}, strict=strict) as judged:
            full = await judged.labels(texts)
            for m in range(1, len(texts)):
                assert await judged.labels(texts[:m]) == full[:m]


async def test_pools_in_flight_share_their_questions():
    cells = []
    for target in ("a", "b"):
        cell = Cell("capital", target, question=QUESTION)
        cell.answers = [Answer(i, i, text) for i, text in enumerate(ANSWERS)]
        cells.append(cell)
    async with Judged(CAPITALS) as judged:
        (a,), (b,) = await classify_each([[cells[0]], [cells[1]]], judged.strategy)
        assert a.labels == b.labels == (0, 0, 0, 1, 0, 2, 1, 0)
        assert judged.calls == 7 and judged.judge.requests == 7


async def test_judge_calls_are_captured_in_the_entailment_group_and_cached(db):
    with db.session_scope() as session:
        repo = GroupRepository(session)
        first = repo.create_group(ENTAILMENT_GROUP, "set/run-1/entailment-1")
        second = repo.create_group(ENTAILMENT_GROUP, "set/run-2/entailment-1")

    async with Judged(CAPITALS, db=db, group_id=first) as judged:
        labels = await judged.labels(ANSWERS)
        assert judged.calls == 7
    with db.session_scope() as session:
        calls = RawCallRepository(session).calls_in_group(first)
        assert len(calls) == 7
        assert {(c.provider, c.model, c.status) for c in calls} == {
            ("offline", "offline-judge", "success")
        }
        assert all(c.metadata_json["purpose"] == ENTAILMENT_GROUP for c in calls)
        prompt = calls[0].request_json["messages"][-1]["content"]
        assert f'the question "{QUESTION}"' in prompt
        assert "Possible Answer 1: Canberra\nPossible Answer 2: It is Canberra." in prompt
        assert calls[0].response_json["text"] == E

    # A new process (a re-run): every verdict comes from the cache, and joins its run's group.
    async with Judged(CAPITALS, db=db, group_id=second) as judged:
        assert await judged.labels(ANSWERS) == labels
        assert judged.calls == 0 and judged.judge.requests == 7
    with db.session_scope() as session:
        repo = RawCallRepository(session)
        assert [c.id for c in repo.calls_in_group(second)] == [c.id for c in calls]
        assert session.query(RawCall).count() == 7


async def test_the_strategy_key_follows_the_judge_and_the_rule():
    strict = EntailmentStrategy(JUDGE)
    assert strict.key.startswith("entailment-")
    assert strict.key == EntailmentStrategy(dict(JUDGE)).key
    assert strict.key != EntailmentStrategy(JUDGE, strict=False).key
    assert strict.key != EntailmentStrategy({**JUDGE, "model": "gpt-4o-mini"}).key
    with pytest.raises(RuntimeError, match="no judge"):
        await strict.partition(["a"])
