"""The opt-in calibration benchmark: without a question file or keys it says what it needs and
exits 0; a bad file is refused at its line before any call; with the offline provider (no
keys) it runs end to end, so the real run is one configuration away."""

import json

import pytest

from benchmarks import bench_calibration as bench
from tests.support.pipeline import SettingsForTest


@pytest.fixture
def no_keys(monkeypatch):
    """The project's settings without the developer's environment or .env."""
    monkeypatch.setattr("study_query_dagster.config.get_settings", lambda: SettingsForTest())


def test_without_a_file_it_says_what_it_needs(capsys, monkeypatch, no_keys):
    monkeypatch.delenv("CALIBRATION_QUESTIONS", raising=False)
    assert bench.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("calibration: skipped (opt-in). Needs a JSONL file of questions")
    assert [line for line in bench.run()] == [out.strip()]


def test_without_keys_it_names_them(tmp_path, capsys, no_keys):
    path = tmp_path / "q.jsonl"
    path.write_text(json.dumps({"question": "2+2?", "reference": 4}) + "\n")
    assert bench.main([str(path), "--target", "openai:gpt-4o-mini"]) == 0
    out = capsys.readouterr().out
    assert out == "calibration: skipped: set OPENAI_API_KEY (in .env or the environment)\n"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{nope", "q.jsonl:2: not JSON"),
        ('{"question": ""}', "q.jsonl:2: field 'question' must be a text"),
        ('{"question": "q", "reference": []}', "q.jsonl:2: field 'reference' must be an answer"),
    ],
)
def test_a_bad_question_file_is_refused_at_its_line(tmp_path, capsys, no_keys, line, message):
    path = tmp_path / "q.jsonl"
    path.write_text('{"question": "ok?", "reference": "yes"}\n' + line + "\n")
    assert bench.main([str(path), "--target", "offline:offline-echo"]) == 2
    assert message in capsys.readouterr().err


def test_it_runs_end_to_end_offline(tmp_path, capsys, no_keys):
    path = tmp_path / "q.jsonl"
    lines = [
        {"question": "What is the capital of Australia?", "reference": "Canberra"},
        {"question": "What is the capital of Peru?", "reference": ["Lima"]},
    ]
    path.write_text("\n".join(json.dumps(q) for q in lines) + "\n")
    args = [str(path), "--target", "offline:offline-echo", "--samples", "3", "--logprobs"]
    assert bench.main([*args, "--database", f"sqlite:///{tmp_path / 'c.db'}"]) == 0
    out = capsys.readouterr().out.splitlines()
    # Offline answers name their sample, so they all differ and none is right.
    assert out[0].startswith("calibration: 2 of 2 questions x 3 answers (offline:offline-echo;")
    assert "accuracy 0.000 (2 wrong)" in out[0]
    assert [line.split()[1:3] for line in out[1:5]] == [
        ["semantic", "entropy"],
        ["naive", "entropy"],
        ["1", "-"],
        ["likelihood", "semantic"],
    ]
    assert all(line.endswith("undefined (all right or all wrong)") for line in out[1:5])
    # Per question 3 distinct answers: 0 + 1 + 2 comparisons (one neutral call each), and each
    # answer graded against the reference (3): 6 calls per question.
    assert out[5] == "  judge calls: 12 (2.00 per answer, 0 unreadable replies)"
