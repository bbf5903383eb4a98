"""The offline provider as a scripted entailment judge (it reads the prompt the `entailment`
strategy writes), and the known log-probabilities of scripted answers."""

import pytest

from study_query_dagster.providers.offline import SCRIPTED_LOGPROB, OfflineProvider
from study_query_dagster.providers.offline_judge import check_script, judge_reply
from study_query_dagster.services.variation.judge import judge_prompt, read_verdict

SCRIPT = {
    "meanings": {"Canberra": "au", "It is Canberra.": "au", "Sydney": "nsw"},
    "verdicts": [["Canberra", "Canberra, Australia", "Entailment."], ["x", "y", "no idea"]],
    "otherwise": "contradiction",
}


async def ask(script, premise, hypothesis, question="What is the capital of Australia?"):
    reply = await OfflineProvider("offline-judge").complete(
        messages=[{"role": "user", "content": judge_prompt(question, premise, hypothesis)}],
        offline_judge=script,
    )
    return reply.text


@pytest.mark.parametrize(
    ("premise", "hypothesis", "reply"),
    [
        ("Canberra", "Canberra, Australia", "Entailment."),  # a scripted pair, verbatim
        ("Canberra, Australia", "Canberra", "contradiction"),  # pairs are ordered: otherwise
        ("canberra", "IT IS CANBERRA", "entailment"),  # one meaning (answers looked up folded)
        ("Sydney", "Canberra", "contradiction"),  # two meanings
        ("Perth!", "perth", "entailment"),  # no meaning: equal once folded
        ("Perth", "Darwin", "contradiction"),  # no meaning, different: `otherwise`
        ("x", "y", "no idea"),
    ],
)
async def test_the_offline_judge_follows_its_script(premise, hypothesis, reply):
    assert await ask(SCRIPT, premise, hypothesis) == reply


async def test_true_compares_folded_answers_and_is_neutral_otherwise():
    assert await ask(True, "Canberra.", "canberra") == "entailment"
    assert await ask(True, "Canberra", "Sydney") == "neutral"
    # Multi-line answers are read whole.
    assert await ask(True, "line one\nline two", "Line one. Line two!") == "entailment"


def test_the_judge_prompt_names_the_question_and_both_answers():
    prompt = judge_prompt("Is it safe?", "Yes", "No")
    assert prompt.startswith('We are evaluating answers to the question "Is it safe?"\n')
    assert "Possible Answer 1: Yes\nPossible Answer 2: No\n" in prompt
    assert judge_reply(True, prompt) == "neutral"


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("entailment", "entailment"),
        ("Contradiction.", "contradiction"),
        ("The answer is: NEUTRAL", "neutral"),
        ("neutral, not entailment", "neutral"),  # the earliest verdict named
        ("I cannot tell", None),
        ("", None),
    ],
)
def test_replies_are_read_as_their_earliest_verdict(reply, verdict):
    assert read_verdict(reply) == verdict


@pytest.mark.parametrize(
    ("script", "message"),
    [
        ("yes", "must be true or a mapping"),
        ({"meaning": {}}, "unknown key(s) ['meaning']"),
        ({"meanings": {"a": 1}}, "meanings must map answers to meaning names"),
        ({"verdicts": [["a", "b"]]}, "[premise, hypothesis, reply] triples"),
        ({"otherwise": ""}, "otherwise must be a reply text"),
    ],
)
def test_malformed_judge_scripts_are_refused(script, message):
    with pytest.raises(ValueError) as caught:
        check_script(script)
    assert message in str(caught.value)


def test_a_prompt_that_is_not_an_entailment_question_is_refused():
    with pytest.raises(ValueError, match="not an entailment question"):
        judge_reply(True, "What is the capital of Australia?")


async def test_scripted_answers_have_known_log_probabilities():
    reply = await OfflineProvider().complete(
        "capital?", sample_index=0, offline_answers={"It is Canberra.": 1}, logprobs=True
    )
    tokens = reply.logprobs["content"]
    assert [t["token"] for t in tokens] == ["It", " is", " Canberra."]
    assert [t["logprob"] for t in tokens] == [SCRIPTED_LOGPROB] * 3
    free = await OfflineProvider().complete("capital?", logprobs=True)
    assert {t["logprob"] for t in free.logprobs["content"]} != {SCRIPTED_LOGPROB}
