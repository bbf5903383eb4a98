"""Prompt sets: shipped samples and examples, expansion, content hash, cost bound, preview."""

import hashlib
import json
import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from study_query_dagster.services.pricing import Price, PriceTable, get_price_table
from study_query_dagster.services.prompt_sets import (
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    WorkItem,
    discover_prompt_sets,
    estimate_max_cost,
    load_prompt_set,
    parse_prompt_set,
    preview_markdown,
    preview_rows,
    render_template,
    template_fields,
)

ROOT = Path(__file__).resolve().parents[2]
SAMPLES = ROOT / "prompt_sets"
EXAMPLES = SAMPLES / "examples"


def load_text(tmp_path, text, name="set.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return load_prompt_set(path)


# --- shipped files ---------------------------------------------------------------------------


def test_shipped_samples_load_and_run_offline():
    valid, errors = discover_prompt_sets(SAMPLES)
    assert errors == {}
    assert set(valid) == {
        "capitals",
        "country_facts",
        "follow-ups",
        *VARIATION_SAMPLES,
        "variation_calibration",
    }
    for loaded in valid.values():
        prompt_set = loaded.prompt_set
        assert {t.provider for t in prompt_set.targets} == {"offline"}
        assert 1 <= prompt_set.expected_calls <= 60  # small: tens of calls
        assert estimate_max_cost(prompt_set).total == 0.0
        assert len(loaded.content_hash) == 64

    capitals = valid["capitals"].prompt_set
    assert len(capitals.targets) == 2 and capitals.samples > 1 and capitals.embed.enabled
    assert capitals.schedule == "daily"
    assert all(p.kind == "text" for p in capitals.prompts)
    assert {p.kind for p in valid["country_facts"].prompt_set.prompts} == {"vars"}
    assert {p.kind for p in valid["follow-ups"].prompt_set.prompts} == {"messages"}


VARIATION_SAMPLES = ("variation_stable", "variation_noisy", "variation_disagree", "variation_drift")


def test_variation_samples_script_every_answer():
    """Each item of the variation samples has a scripted answer (their metrics are known), and
    the drift sample scripts a change from its first run to its second."""
    valid, _ = discover_prompt_sets(SAMPLES)
    for name in VARIATION_SAMPLES:
        prompt_set = valid[name].prompt_set
        assert prompt_set.samples >= 10  # enough to test drift (see docs/VARIATION.md)
        assert all("offline_answers" in item.params for item in prompt_set.work_items())
    drift = valid["variation_drift"].prompt_set
    first, second = (
        {i.key: i.params["offline_answers"] for i in drift.for_run(n).work_items()} for n in (1, 2)
    )
    assert first["capital/drifting/0"] == {"Canberra": 10}
    assert second["capital/drifting/0"] == {"Sydney": 7, "Canberra": 3}
    assert first["boiling/drifting/0"] == second["boiling/drifting/0"] == {"100": 10}


EXAMPLE_FILES = sorted(EXAMPLES.glob("*.example"))


def test_examples_are_ignored_by_the_scan_and_cover_every_real_provider():
    assert len(EXAMPLE_FILES) >= 4
    providers = set()
    for path in EXAMPLE_FILES:
        providers |= {
            t.provider for t in parse_prompt_set(path.read_text(), path.stem).prompt_set.targets
        }
    assert {"azure", "openai", "hyperbolic"} <= providers
    assert "base_url" in (EXAMPLES / "openai_compatible.yaml.example").read_text().lower()


@pytest.mark.parametrize("example", EXAMPLE_FILES, ids=lambda p: p.name)
def test_every_example_loads_once_copied_without_the_suffix(tmp_path, example):
    target = tmp_path / example.name.removesuffix(".example")
    shutil.copy(example, target)
    valid, errors = discover_prompt_sets(tmp_path)
    assert errors == {}
    assert [loaded.path for loaded in valid.values()] == [target]


def test_examples_readme_names_the_credential_variables():
    readme = (EXAMPLES / "README.md").read_text()
    for name in [
        "AZURE_OPENAI_API_KEY",
        "AZURE_OPENAI_ENDPOINT",
        "AZURE_OPENAI_API_VERSION",
        "OPENAI_API_KEY",
        "OPENAI_BASE_URL",
        "HYPERBOLIC_API_KEY",
        "HYPERBOLIC_BASE_URL",
    ]:
        assert name in readme


# --- expansion -------------------------------------------------------------------------------

EXPANSION = """\
name: expansion
system: Be brief.
template: "Capital of {country}? Answer {{in braces}}."
prompts:
  - id: plain
    text: Hello?
  - id: templated
    vars: {country: Peru, unused: kept}
  - id: chat
    messages:
      - {role: user, content: Hi}
      - {role: assistant, content: Hello!}
      - {role: user, content: "Who are you?"}
  - id: own-system
    messages:
      - {role: system, content: You are a pirate.}
      - {role: user, content: "Weather?"}
targets:
  - provider: offline
    model: offline-echo
    params: {temperature: 0, max_tokens: 8}
  - provider: openai
    model: gpt-4o-mini
    label: mini
  - provider: hyperbolic
    model: meta-llama/Llama-3.3-70B-Instruct
  - provider: offline
    model: offline-echo
    params: {temperature: 1}
  - provider: azure
    deployment: prod-mini
samples: 2
"""


def test_expansion_order_keys_and_fields(tmp_path):
    prompt_set = load_text(tmp_path, EXPANSION).prompt_set
    items = prompt_set.work_items()
    assert prompt_set.expected_calls == len(items) == 4 * 5 * 2
    assert prompt_set.target_labels == [
        "offline-echo",
        "mini",
        "hyperbolic-Llama-3.3-70B-Instruct",
        "offline-echo-2",
        "azure-prod-mini",
    ]
    # prompt-major, then target, then sample; keys unique and built from the parts
    assert [i.key for i in items[:5]] == [
        "plain/offline-echo/0",
        "plain/offline-echo/1",
        "plain/mini/0",
        "plain/mini/1",
        "plain/hyperbolic-Llama-3.3-70B-Instruct/0",
    ]
    assert items[-1].key == "own-system/azure-prod-mini/1"
    assert [i.index for i in items] == list(range(len(items)))
    assert len({i.key for i in items}) == len(items)
    for item in items:
        assert item.key == f"{item.prompt_id}/{item.target_label}/{item.sample_index}"

    first = items[0]
    assert first == WorkItem(
        key="plain/offline-echo/0",
        index=0,
        prompt_id="plain",
        target_label="offline-echo",
        sample_index=0,
        provider="offline",
        model="offline-echo",
        deployment=None,
        params={"temperature": 0.0, "max_tokens": 8},
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
        prompt_text="Hello?",
        vars=None,
    )
    by_key = {i.key: i for i in items}
    assert by_key["plain/mini/0"].params == {}  # only what the target sets
    azure = by_key["plain/azure-prod-mini/0"]
    assert (azure.provider, azure.model, azure.deployment, azure.model_name) == (
        "azure",
        None,
        "prod-mini",
        "prod-mini",
    )

    templated = by_key["templated/mini/1"]
    assert templated.prompt_text == "Capital of Peru? Answer {in braces}."
    assert templated.messages[-1] == {"role": "user", "content": templated.prompt_text}
    assert templated.vars == {"country": "Peru", "unused": "kept"}

    chat = by_key["chat/offline-echo-2/0"]
    assert chat.prompt_text is None
    assert [m["role"] for m in chat.messages] == ["system", "user", "assistant", "user"]
    assert chat.params == {"temperature": 1.0}
    # a conversation with its own system message does not get the set's as well
    assert by_key["own-system/mini/0"].messages == [
        {"role": "system", "content": "You are a pirate."},
        {"role": "user", "content": "Weather?"},
    ]


def test_expansion_is_stable_and_items_are_independent(tmp_path):
    prompt_set = load_text(tmp_path, EXPANSION).prompt_set
    again = load_text(tmp_path, EXPANSION, "again.yaml").prompt_set
    assert prompt_set.work_items() == again.work_items()
    items = prompt_set.work_items()
    items[0].messages[0]["content"] = "changed"
    items[0].params["seed"] = 1
    assert items[1].messages[0]["content"] == "Be brief."
    assert prompt_set.work_items()[0].params == {"temperature": 0.0, "max_tokens": 8}


def test_no_system_prompt_means_only_the_prompt(tmp_path):
    loaded = load_text(
        tmp_path,
        """\
        name: bare
        prompts: [{id: a, text: Hi}]
        targets: [{provider: offline, model: m}]
        """,
    )
    assert loaded.prompt_set.work_items()[0].messages == [{"role": "user", "content": "Hi"}]
    assert loaded.prompt_set.samples == 1 and loaded.prompt_set.schedule == "none"
    assert loaded.prompt_set.cache is False and loaded.prompt_set.embed.enabled is False


def test_yaml_keeps_norway_and_reads_switches(tmp_path):
    prompt_set = load_text(
        tmp_path,
        """\
        name: switches
        template: "{country} {flag}"
        prompts: [{id: a, vars: {country: NO, flag: yes}}, {id: b, text: 'on'}]
        targets: [{provider: offline, model: m}]
        embed: on
        cache: yes
        """,
    ).prompt_set
    assert prompt_set.work_items()[0].prompt_text == "NO yes"
    assert prompt_set.embed.enabled is True and prompt_set.cache is True


def test_embed_forms(tmp_path):
    base = "name: e\nprompts: [{id: a, text: x}]\ntargets: [{provider: offline, model: m}]\n"
    for value, expected in [
        ("off", (False, None, None)),
        ("true", (True, None, None)),
        (
            "{model: text-embedding-3-small, provider: openai}",
            (True, "openai", "text-embedding-3-small"),
        ),
        ("{enabled: false, model: x}", (False, None, "x")),
    ]:
        embed = load_text(tmp_path, base + f"embed: {value}\n").prompt_set.embed
        assert (embed.enabled, embed.provider, embed.model) == expected


def test_template_helpers():
    assert template_fields("{a} and {b} and {a} {{literal}}") == ["a", "b"]
    assert render_template("{a:>3}|{{x}}", {"a": 7}) == "  7|{x}"
    with pytest.raises(KeyError, match="b"):
        render_template("{a}{b}", {"a": 1})
    with pytest.raises(ValueError, match="plain name"):
        render_template("{a.__class__}", {"a": 1})


def test_json_and_yaml_files_give_the_same_set(tmp_path):
    from_yaml = load_text(tmp_path, EXPANSION)
    path = tmp_path / "expansion.json"
    path.write_text(json.dumps(yaml.safe_load(EXPANSION), indent=1))
    from_json = load_prompt_set(path)
    assert from_json.prompt_set == from_yaml.prompt_set
    assert from_json.content_hash == from_yaml.content_hash
    assert from_json.path == path


# --- content hash ----------------------------------------------------------------------------


def test_content_hash_ignores_comments_whitespace_order_and_spelled_out_defaults(tmp_path):
    base = load_text(tmp_path, EXPANSION).content_hash
    cosmetic = [
        "# a comment\n" + EXPANSION.replace("samples: 2", "samples: 2   # two each"),
        EXPANSION.replace("\n", "\n\n").replace(": ", ":   "),
        # key order: top-level keys moved, and keys inside a prompt swapped
        EXPANSION.replace("name: expansion\n", "") + "name: expansion\n",
        EXPANSION.replace("  - id: plain\n    text: Hello?", "  - text: Hello?\n    id: plain"),
        # flow vs block style, and defaults written out
        EXPANSION.replace(
            "    params: {temperature: 0, max_tokens: 8}",
            "    params:\n      max_tokens: 8\n      temperature: 0.0",
        ),
        EXPANSION + "cache: false\nschedule: none\nembed: off\ntags: []\ndescription: ''\n",
    ]
    for i, text in enumerate(cosmetic):
        assert load_text(tmp_path, text, f"c{i}.yaml").content_hash == base, text


def test_content_hash_changes_with_real_edits(tmp_path):
    base = load_text(tmp_path, EXPANSION)
    assert base.content_hash == base.prompt_set.content_hash()
    edits = [
        EXPANSION.replace("Hello?", "Hello!"),
        EXPANSION.replace("samples: 2", "samples: 3"),
        EXPANSION.replace("temperature: 0,", "temperature: 0.1,"),
        EXPANSION.replace("system: Be brief.", "system: Be very brief."),
        EXPANSION.replace("country: Peru", "country: Chile"),
        EXPANSION.replace("label: mini", "label: mini-2"),
        EXPANSION + "cache: true\n",
        EXPANSION + "schedule: daily\n",
        EXPANSION + "embed: on\n",
        # prompt order is the expansion order: moving a prompt is a real edit
        EXPANSION.replace("  - id: plain\n    text: Hello?\n", "").replace(
            "  - id: own-system\n", "  - id: plain\n    text: Hello?\n  - id: own-system\n"
        ),
    ]
    hashes = {load_text(tmp_path, text, f"e{i}.yaml").content_hash for i, text in enumerate(edits)}
    assert len(hashes) == len(edits)
    assert base.content_hash not in hashes


PINNED = """\
name: pin
description: Umlaute und Akzente
prompts:
  - id: q1
    text: Où est Genève?
  - id: q2
    messages:
      - {role: system, content: Sei knapp.}
      - {role: user, content: "Wie heißt die Hauptstadt?"}
targets:
  - provider: offline
    model: echo
    params: {temperature: 0.5, stop: END}
  - provider: azure
    deployment: prod-mini
    label: az
samples: 2
cache: false
embed: on
"""


def test_content_hash_recipe_is_pinned(tmp_path):
    # Stored runs are matched by this hash: the recipe (sorted keys, no spaces, non-ASCII kept,
    # defaults left out, sha256 of UTF-8) must not drift, whatever the code around it becomes.
    canonical = (
        '{"description":"Umlaute und Akzente","embed":{"enabled":true},"name":"pin",'
        '"prompts":[{"id":"q1","text":"Où est Genève?"},{"id":"q2","messages":['
        '{"content":"Sei knapp.","role":"system"},'
        '{"content":"Wie heißt die Hauptstadt?","role":"user"}]}],"samples":2,'
        '"targets":[{"model":"echo","params":{"stop":["END"],"temperature":0.5},'
        '"provider":"offline"},{"deployment":"prod-mini","label":"az","provider":"azure"}]}'
    )
    loaded = load_text(tmp_path, PINNED)
    assert loaded.prompt_set.canonical_json() == canonical
    assert loaded.content_hash == hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    assert loaded.content_hash == "d8a2df4ec0a481e9839477c95fee9bbe28bf491b949eaefde80aafb7fc8d653e"


# --- cost ------------------------------------------------------------------------------------

COST = """\
name: cost
system: Be brief.
prompts:
  - {id: a, text: abc}
  - {id: b, text: héllo}
targets:
  - {provider: openai, model: m1, label: priced, params: {max_tokens: 10}}
  - {provider: openai, model: m2, label: unpriced, params: {max_tokens: 10}}
  - {provider: openai, model: m1, label: unbounded}
  - {provider: offline, model: anything, label: free}
samples: 2
"""
TABLE = PriceTable({"openai": {"m1": Price(1.0, 2.0)}, "offline": {"*": Price(0.0, 0.0)}})


def test_cost_upper_bound_matches_a_hand_computation(tmp_path):
    estimate = estimate_max_cost(load_text(tmp_path, COST).prompt_set, TABLE)
    priced = estimate.targets[0]
    assert (MESSAGE_OVERHEAD_TOKENS, REQUEST_OVERHEAD_TOKENS) == (8, 8)
    # prompt a: 8 (request) + 8 + 9 ("Be brief.") + 8 + 3 ("abc")          = 36 tokens
    # prompt b: 8 (request) + 8 + 9 ("Be brief.") + 8 + 6 ("héllo" in UTF-8) = 39 tokens
    # 2 samples: (36 + 39) * 2 = 150 prompt tokens; 4 calls * 10 = 40 completion tokens
    assert (priced.calls, priced.max_prompt_tokens, priced.max_completion_tokens) == (4, 150, 40)
    assert priced.max_cost == pytest.approx((150 * 1.0 + 40 * 2.0) / 1e6)
    assert estimate.targets[3].max_cost == 0.0  # free stays free even without max_tokens


def test_cost_is_unknown_not_zero_and_says_why(tmp_path):
    estimate = estimate_max_cost(load_text(tmp_path, COST).prompt_set, TABLE)
    assert estimate.total is None
    assert set(estimate.unknown) == {"unpriced", "unbounded"}
    assert "no price for openai model 'm2'" in estimate.unknown["unpriced"]
    assert "max_tokens" in estimate.unknown["unbounded"]
    assert estimate.targets[1].max_cost is None and estimate.targets[2].max_cost is None
    assert estimate.targets[2].max_completion_tokens is None
    summary = estimate.summary()
    assert summary.startswith("unknown") and "unpriced" in summary and "unbounded" in summary

    known = COST.replace(
        "  - {provider: openai, model: m2, label: unpriced, params: {max_tokens: 10}}\n", ""
    )
    known = known.replace("  - {provider: openai, model: m1, label: unbounded}\n", "")
    estimate = estimate_max_cost(load_text(tmp_path, known, "known.yaml").prompt_set, TABLE)
    assert estimate.total == pytest.approx(230 / 1e6) and estimate.unknown == {}
    assert estimate.summary() == "at most $0.000230"


def test_cost_uses_the_shipped_table_by_default(tmp_path):
    text = """\
    name: shipped
    prompts: [{id: a, text: Hi}]
    targets:
      - {provider: azure, deployment: prod, model: gpt-4o-mini, params: {max_tokens: 100}}
      - {provider: azure, deployment: my-custom-name, params: {max_tokens: 100}}
    """
    estimate = estimate_max_cost(load_text(tmp_path, text).prompt_set)
    price = get_price_table().lookup("openai", "gpt-4o-mini")
    prompt_tokens = REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 2
    assert estimate.targets[0].max_cost == pytest.approx(price.cost(prompt_tokens, 100))
    assert estimate.targets[1].max_cost is None  # a bare deployment name has no known price
    assert "my-custom-name" in estimate.unknown["azure-my-custom-name"]


# --- preview ---------------------------------------------------------------------------------


def test_preview_rows_and_markdown(tmp_path):
    text = EXPANSION.replace("Hello?", "Hello | world " + "x" * 200)
    prompt_set = load_text(tmp_path, text).prompt_set
    rows = preview_rows(prompt_set, limit=None, width=40)
    assert len(rows) == 4 * 5  # prompt x target, not per sample
    assert rows[0] == {
        "prompt_id": "plain",
        "target": "offline-echo",
        "model": "offline/offline-echo",
        "prompt": rows[0]["prompt"],
    }
    assert rows[0]["prompt"].startswith("Hello | world xxx") and rows[0]["prompt"].endswith("…")
    assert len(rows[0]["prompt"]) == 40
    assert rows[5]["prompt"] == "Capital of Peru? Answer {in braces}."
    assert rows[10]["prompt"] == "[4 messages] Who are you?"
    assert rows[2]["model"] == "hyperbolic/meta-llama/Llama-3.3-70B-Instruct"
    assert len(preview_rows(prompt_set, limit=3)) == 3

    markdown = preview_markdown(prompt_set, limit=3, width=40)
    lines = markdown.splitlines()
    assert lines[0] == "| prompt_id | target | model | prompt |"
    assert lines[2].startswith("| plain | offline-echo | offline/offline-echo | Hello \\| world")
    assert len([line for line in lines if line.startswith("| ")]) == 4  # header + 3 rows
    assert lines[-1] == "… 17 more of 20 prompt × target pairs"
    assert "more of" not in preview_markdown(prompt_set, limit=100)


# --- the user guide's examples are real ------------------------------------------------------

GUIDE = ROOT / "docs" / "USER_GUIDE.md"


def guide_blocks(language):
    text = GUIDE.read_text()
    section = text[text.index("## Writing a prompt set") :]
    return [block.split("```", 1)[0] for block in section.split(f"```{language}\n")[1:]]


def test_user_guide_full_example_and_json_example_load():
    full = parse_prompt_set(guide_blocks("yaml")[0], "capitals.yaml").prompt_set
    assert full.expected_calls == 12  # as the guide says
    assert full.target_labels == ["echo-cold", "openai-gpt-4o-mini"]
    from_json = parse_prompt_set(guide_blocks("json")[0], "capitals.json").prompt_set
    assert from_json.name == "capitals-json" and from_json.samples == 2


def test_readme_example_loads():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("## Prompt sets") :].split("```yaml\n", 1)[1].split("```", 1)[0]
    assert parse_prompt_set(block, "README.md").prompt_set.expected_calls == 3


def test_examples_readme_sketch_loads():
    readme = (EXAMPLES / "README.md").read_text()
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    prompt_set = parse_prompt_set(block, "sketch.yaml").prompt_set
    assert [p.kind for p in prompt_set.prompts] == ["text", "vars", "messages"]
