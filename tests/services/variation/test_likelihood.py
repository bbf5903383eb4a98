"""Likelihood-based semantic entropy: the formula on hand-made log-probabilities, and the
likelihoods cells read from captured calls (inline, and from a large call's artifact) on
SQLite and PostgreSQL."""

import math

import pytest

from study_query_dagster.db import GroupRepository, RawCallRepository
from study_query_dagster.providers.offline import SCRIPTED_LOGPROB, OfflineProvider
from study_query_dagster.services.inference import InferenceService
from study_query_dagster.services.variation import ExactStrategy, classify, load_cells, run_scope
from study_query_dagster.services.variation import measures as m
from study_query_dagster.services.variation.cells import logprob_sum
from study_query_dagster.services.variation.metrics import (
    likelihood_semantic_entropy,
    semantic_entropy,
)

from .support import prompt_set_content


def entropy(*p):
    return -sum(x * math.log(x) for x in p)


def test_likelihood_semantic_entropy_by_hand():
    # Class 0 holds answers of probability 0.4 and 0.2, class 1 one of 0.2: p = (0.75, 0.25).
    value = likelihood_semantic_entropy([0, 0, 1], [math.log(0.4), math.log(0.2), math.log(0.2)])
    assert value == pytest.approx(entropy(0.75, 0.25), abs=1e-15)
    assert round(value, 7) == 0.5623351
    # Only ratios matter: far below the smallest float, the same value (log space).
    shifted = [math.log(0.4) - 5000, math.log(0.2) - 5000, math.log(0.2) - 5000]
    assert likelihood_semantic_entropy([0, 0, 1], shifted) == pytest.approx(value, abs=1e-12)
    # Equally likely answers: the discrete semantic entropy of the counts.
    labels = [0] * 7 + [1] * 3
    assert likelihood_semantic_entropy(labels, [-1.5] * 10) == pytest.approx(
        semantic_entropy([7, 3]), abs=1e-15
    )
    assert likelihood_semantic_entropy(["x", "x"], [-3.0, -0.1]) == 0.0


def test_likelihood_semantic_entropy_refuses_what_it_cannot_weigh():
    with pytest.raises(ValueError, match="one log-likelihood per answer"):
        likelihood_semantic_entropy([0, 1], [-1.0])
    with pytest.raises(ValueError, match="finite"):
        likelihood_semantic_entropy([0, 1], [-1.0, -math.inf])


def test_an_answers_likelihood_is_the_sum_of_its_token_log_probabilities():
    tokens = {"content": [{"token": "Can", "logprob": -0.5}, {"token": "berra", "logprob": -0.25}]}
    assert logprob_sum(tokens) == -0.75
    assert logprob_sum({"content": []}) is None
    assert logprob_sum({"content": None, "refusal": "no"}) is None
    assert logprob_sum({"content": [{"token": "x", "logprob": None}]}) is None
    assert logprob_sum(None) is None


LONG = " ".join(["word"] * 1000)  # its log-probabilities exceed 32 KiB: a call artifact


async def test_cells_read_captured_likelihoods_inline_and_from_artifacts(db):
    content = prompt_set_content(targets=("a",), samples=3)
    with db.session_scope() as session:
        run = GroupRepository(session).create_group(
            "run", "set/run-1", metadata_json={"content": content}
        )
    service = InferenceService(OfflineProvider(), db, max_retry_after=1.0)
    for sample in range(3):
        await service.run_inference(
            "Question capital?",
            sample_index=sample,
            group_id=run,
            extra_metadata={"prompt_id": "capital", "target": "a"},
            offline_answers={"Canberra": 2, LONG: 1},
            logprobs=True,
            top_logprobs=3,
        )
    await service.aclose()
    with db.session_scope() as session:
        scope = run_scope(GroupRepository(session).get_group(run))
        calls = RawCallRepository(session).calls_in_group(run)
        assert "logprobs_artifact" in calls[2].response_json  # the long answer's
    (cell,) = load_cells(db, scope)
    assert cell.question == "Question capital?"
    assert [a.logprob for a in cell.answers] == [SCRIPTED_LOGPROB, SCRIPTED_LOGPROB, -250.0]

    (classified,) = await classify([cell], ExactStrategy())
    [value] = [v for v in m.cell_metrics(classified) if v.metric == m.LIKELIHOOD_SEMANTIC_ENTROPY]
    p_long = math.exp(-250.0) / (math.exp(-250.0) + 2 * math.exp(SCRIPTED_LOGPROB))
    assert value.value == pytest.approx(entropy(p_long, 1 - p_long), rel=1e-9)
    assert value.n == 3


async def test_no_likelihood_entropy_unless_every_answer_has_a_likelihood():
    from study_query_dagster.services.variation.cells import Answer, Cell

    cell = Cell("p", "t", answers=[Answer(1, 0, "yes", logprob=-1.0), Answer(2, 1, "no")])
    (classified,) = await classify([cell], ExactStrategy())
    assert m.likelihood_value(classified) == []
    cell = Cell(
        "p",
        "t",
        answers=[
            Answer(1, 0, "yes", logprob=math.log(0.5)),
            Answer(2, 1, "", refused=True),  # refusals are left out, not a reason to give up
            Answer(3, 2, "no", logprob=math.log(0.25)),
        ],
    )
    (classified,) = await classify([cell], ExactStrategy())
    [value] = m.likelihood_value(classified)
    assert value.value == pytest.approx(entropy(2 / 3, 1 / 3)) and value.n == 2
