"""The prompt-set format's answer-variation parts: the `variation:` block and scripted offline
answers, with every mistake reported at its line and field before anything runs."""

import textwrap

import pytest

from study_query_dagster.services.prompt_sets import PromptSetError, parse_prompt_set

BASE = """\
name: scripted
prompts:
  - id: capital
    text: What is the capital of Australia?
  - id: river
    text: Which is the longest river of Australia?
targets:
  - provider: offline
    model: offline-echo
    params:
      offline_answers:
        capital: {Canberra: 7, Sydney: 3}
        "*": {Murray: 10}
samples: 10
"""


def parse(text: str):
    return parse_prompt_set(textwrap.dedent(text), "prompt_sets/scripted.yaml").prompt_set


def problems(text: str) -> list[str]:
    with pytest.raises(PromptSetError) as caught:
        parse(text)
    return [str(p) for p in caught.value.problems]


def test_scripts_become_each_items_quota():
    prompt_set = parse(BASE)
    params = {i.key: i.params for i in prompt_set.work_items()}
    assert params["capital/offline-echo/0"] == {"offline_answers": {"Canberra": 7, "Sydney": 3}}
    assert params["river/offline-echo/9"] == {"offline_answers": {"Murray": 10}}
    assert prompt_set.targets[0].params.as_dict() == {}  # resolved per item, never sent whole
    assert prompt_set.variation.strategy == "exact"


def test_content_hash_of_sets_without_variation_is_unchanged():
    plain = BASE.split("    params:")[0] + "samples: 10\n"
    spelled = plain + "variation: {strategy: exact, baseline: previous, permutations: 999}\n"
    assert parse(plain).content_hash() == parse(spelled).content_hash()


def test_every_script_mistake_at_its_line():
    text = BASE.replace("capital: {Canberra: 7, Sydney: 3}", "capital: {Canberra: 7, Sydney: 2}")
    text = text.replace('"*": {Murray: 10}', "rivr: {Murray: 10}")
    assert problems(text) == [
        "prompt_sets/scripted.yaml:12: targets[0].params.offline_answers.capital: the counts add"
        " up to 9, but the set has samples: 10 (each sample gets one scripted answer)",
        "prompt_sets/scripted.yaml:13: targets[0].params.offline_answers.rivr: 'rivr' is not a"
        " prompt id of this set (use one of: capital, river; or '*' for every prompt)",
    ]


def test_a_bad_count_names_the_answer():
    (message,) = problems(BASE.replace("Sydney: 3}", "Sydney: none}"))
    assert message.startswith("prompt_sets/scripted.yaml:12: targets[0].params.offline_answers")
    assert "(answer 'Sydney': got 'none')" in message


def test_scripts_are_for_the_offline_provider_only():
    text = BASE.replace(
        "provider: offline\n    model: offline-echo", "provider: openai\n    model: gpt-4o-mini"
    )
    (message,) = problems(text)
    assert (
        "targets[0].params.offline_answers: scripted answers are for provider offline only"
        in message
    )


def test_runs_scripted_in_turn():
    text = BASE.replace(
        '      offline_answers:\n        capital: {Canberra: 7, Sydney: 3}\n        "*": {Murray: 10}\n',
        '      offline_answers:\n        - {"*": {Canberra: 10}}\n        - {"*": {Sydney: 10}}\n',
    )
    prompt_set = parse(text)
    first = prompt_set.work_items()[0].params  # unresolved: the first run's script
    assert first == {"offline_answers": {"Canberra": 10}}
    assert prompt_set.for_run(2).work_items()[0].params == {"offline_answers": {"Sydney": 10}}
    assert prompt_set.for_run(3).work_items()[0].params == {"offline_answers": {"Sydney": 10}}
    bad = text.replace('- {"*": {Sydney: 10}}', '- {"*": {Sydney: 9}}')
    (message,) = problems(bad)
    assert message.startswith(
        "prompt_sets/scripted.yaml:13: targets[0].params.offline_answers[1].*"
    )


@pytest.mark.parametrize(
    ("block", "line", "fragment"),
    [
        ("variation: {strategy: nli}", "variation.strategy", "'embedding' or 'entailment'"),
        ("variation: {strategy: entailment}", "variation.judge", "entailment needs a judge"),
        ("variation: {strategy: embedding}", "variation.strategy", "set 'embed: on'"),
        (
            "variation: {threshold: 0.2}",
            "variation",
            "'threshold' only applies to strategy embedding",
        ),
        ("variation: {permutations: 0}", "variation.permutations", "greater than or equal to 1"),
        ("variation: {baselne: previous}", "variation.baselne", "did you mean 'baseline'"),
    ],
)
def test_variation_block_mistakes(block, line, fragment):
    (message,) = problems(BASE + block + "\n")
    assert message.startswith(f"prompt_sets/scripted.yaml:15: {line}")
    assert fragment in message


def test_embedding_strategy_with_embed_on():
    prompt_set = parse(BASE + "embed: on\nvariation: {strategy: embedding, threshold: 0.2}\n")
    assert prompt_set.variation.effective_threshold == 0.2


JUDGED = (
    BASE
    + """\
variation:
  strategy: entailment
  judge: {provider: offline, model: offline-judge, params: {offline_judge: true}}
"""
)


def test_references_and_an_entailment_judge():
    text = JUDGED.replace(
        "text: What is the capital of Australia?",
        "text: What is the capital of Australia?\n    reference: Canberra",
    ).replace(
        "text: Which is the longest river of Australia?",
        "text: Which is the longest river of Australia?\n    reference: [Murray, 2508]",
    )
    prompt_set = parse(text)
    assert [p.reference for p in prompt_set.prompts] == [["Canberra"], ["Murray", "2508"]]
    variation = prompt_set.variation
    assert variation.strategy == "entailment" and variation.strict_entailment
    assert variation.judge.describe() == {
        "provider": "offline",
        "model": "offline-judge",
        "params": {"offline_judge": True},
    }
    assert variation.correctness == "exact" and variation.coverages == (0.5, 0.8)
    # References are not sent: the work items are those of the set without them.
    assert [i.params for i in prompt_set.work_items()] == [
        i.params for i in parse(JUDGED).work_items()
    ]
    assert prompt_set.content_hash() != parse(JUDGED).content_hash()


@pytest.mark.parametrize(
    ("change", "line", "fragment"),
    [
        (("strategy: entailment\n", "strategy: exact\n"), "variation.judge", "only called by"),
        (
            ("strategy: entailment\n", "strategy: exact\n  strict: false\n"),
            "variation.strict",
            "only applies to strategy entailment",
        ),
        (
            ("provider: offline, model: offline-judge", "provider: openai, model: gpt-4o-mini"),
            "variation.judge.params.offline_judge",
            "for provider offline only",
        ),
        (
            ("offline_judge: true", "offline_judge: {meaning: {}}"),
            "variation.judge.params.offline_judge",
            "unknown key(s) ['meaning']",
        ),
        (
            ("offline_judge: true", "temprature: 0"),
            "variation.judge.params.temprature",
            "did you mean 'temperature'",
        ),
        (("model: offline-judge, ", ""), "variation.judge.model", "needs 'model'"),
    ],
)
def test_judge_mistakes_at_their_line(change, line, fragment):
    (message,) = problems(JUDGED.replace(*change))
    assert message.startswith(f"prompt_sets/scripted.yaml:17: {line}: ")
    assert fragment in message


def test_correctness_by_judge_needs_a_judge():
    (message,) = problems(BASE + "variation: {correctness: judge}\n")
    assert "variation.judge: correctness judge needs a judge" in message
    assert parse(JUDGED + "  correctness: judge\n").variation.correctness == "judge"


def test_clusters_need_embeddings_and_a_sensible_range():
    (message,) = problems(BASE + "variation: {clusters: {k_max: 5}}\n")
    assert "variation.clusters: answer clusters are found in embedding space" in message
    off = parse(BASE + "variation: {clusters: {enabled: false}}\n")
    assert not off.variation.clusters.enabled
    (message,) = problems(BASE + "embed: on\nvariation: {clusters: {k_min: 6, k_max: 3}}\n")
    assert "variation.clusters.k_min: k_min (6) is above k_max (3)" in message
    on = parse(BASE + "embed: on\nvariation: {clusters: {method: hdbscan, window: 3}}\n")
    assert on.variation.clusters.settings() == {
        "method": "hdbscan",
        "window": 3,
        "seed": 0,
        "min_cluster_size": 5,
    }
