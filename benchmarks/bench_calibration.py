"""Calibration benchmark (opt-in: real keys and a question file of your own; not in
`make test`): does semantic entropy predict wrong answers better than naive entropy?

Given a JSONL file of questions with reference answers, it samples `samples` answers per
question from a target (temperature 1), clusters them by bidirectional entailment with a judge,
grades each question's modal answer against its references with the judge, and prints the
AUROC of semantic entropy (entailment classes), naive entropy (exact-match classes: distinct
normalised strings) and 1 - modal share for predicting a wrong answer, with accuracy and the
judge's cost. Farquhar et al. (Nature 2024) report AUROC ~0.79 for semantic entropy vs ~0.69
for naive entropy averaged over their tasks; expect yours to depend on the model and questions.

    python -m benchmarks.bench_calibration questions.jsonl --target openai:gpt-4o-mini \\
        [--judge openai:gpt-4o-mini] [--samples 10] [--limit 200] [--logprobs]
    CALIBRATION_QUESTIONS=questions.jsonl CALIBRATION_TARGET=openai:gpt-4o-mini make bench

Each line: {"question": "...", "reference": "..." or ["...", ...]} ("id" optional). Keys come
from the project's settings (.env / environment) as for any run. Without a file or keys it
says what it needs and exits 0. Everything is captured in a SQLite database in a temporary
folder (`--database URL` keeps it), like any run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

DEFAULT_TARGET = "openai:gpt-4o-mini"
NAME = "calibration-bench"


@dataclass
class Options:
    questions: Path | None
    target: str = DEFAULT_TARGET
    judge: str | None = None  # the target's model by default
    samples: int = 10
    limit: int | None = None
    logprobs: bool = False
    database: str | None = None

    @classmethod
    def from_env(cls) -> Options:
        """`make bench` passes no arguments: the benchmark reads CALIBRATION_* variables."""
        path = os.environ.get("CALIBRATION_QUESTIONS")
        limit = os.environ.get("CALIBRATION_LIMIT")
        return cls(
            Path(path) if path else None,
            os.environ.get("CALIBRATION_TARGET") or DEFAULT_TARGET,
            os.environ.get("CALIBRATION_JUDGE") or None,
            int(os.environ.get("CALIBRATION_SAMPLES") or 10),
            int(limit) if limit else None,
        )


class BenchmarkInputError(ValueError):
    """The question file cannot be used (named with its line and field)."""


def read_questions(path: Path, limit: int | None) -> list[dict]:
    """Questions with references, every line checked before anything is sent."""
    questions = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise BenchmarkInputError(f"{path}:{number}: not JSON ({error.msg})") from None
        question, reference = item.get("question"), item.get("reference")
        if not isinstance(question, str) or not question.strip():
            raise BenchmarkInputError(f"{path}:{number}: field 'question' must be a text")
        references = [reference] if isinstance(reference, str | int | float) else reference
        if (
            not isinstance(references, list)
            or not references
            or not all(isinstance(r, str | int | float) and str(r).strip() for r in references)
        ):
            raise BenchmarkInputError(
                f"{path}:{number}: field 'reference' must be an answer or a list of answers "
                f"(got {reference!r})"
            )
        questions.append({"question": question, "reference": [str(r) for r in references]})
        if limit is not None and len(questions) >= limit:
            break
    if not questions:
        raise BenchmarkInputError(f"{path}: no questions")
    return questions


def model_target(spec: str, *, judge: bool) -> dict:
    provider, _, model = spec.partition(":")
    target = {"provider": provider, "model": model or "-"}
    if provider == "azure":
        target = {"provider": provider, "deployment": model}
    if judge:
        target["params"] = {"offline_judge": True} if provider == "offline" else {}
    return target


def prompt_set(options: Options, questions: list[dict]) -> dict:
    target = model_target(options.target, judge=False)
    target["label"] = "target"
    target["params"] = {"temperature": 1.0, **({"logprobs": True} if options.logprobs else {})}
    return {
        "name": NAME,
        "prompts": [
            {"id": f"q{i}", "text": q["question"], "reference": q["reference"]}
            for i, q in enumerate(questions)
        ],
        "targets": [target],
        "samples": options.samples,
        "variation": {
            "strategy": "entailment",
            "judge": model_target(options.judge or options.target, judge=True),
            "correctness": "judge",
        },
    }


class Chat:
    """Providers from the project's settings (what a run's `ChatServices` offers)."""

    def __init__(self, settings):
        self.settings = settings

    def missing_env_vars(self, provider: str) -> list[str]:
        from study_query_dagster.providers.factory import ProviderFactory

        return ProviderFactory.missing_env_vars(provider, self.settings)

    def provider_limits(self, provider: str, db=None):
        # `db` is for limits shared through the database (ChatServices); the bench keeps its own.
        from study_query_dagster.services.inference import ProviderLimits

        return ProviderLimits(8, None, None)

    def create_service(self, provider, model, db, limits=None):
        from study_query_dagster.providers.factory import ProviderFactory
        from study_query_dagster.providers.registry import PROVIDERS
        from study_query_dagster.services.inference import InferenceService

        client = ProviderFactory.from_env(
            provider, self.settings, **{PROVIDERS[provider].model_arg: model}
        )
        return InferenceService(client, db, close_provider=True, limits=limits)


def lines(options: Options) -> Iterator[str]:
    from study_query_dagster.config import get_settings
    from study_query_dagster.services.prompt_sets import LoadedPromptSet, PromptSet

    if options.questions is None or not options.questions.exists():
        yield (
            "calibration: skipped (opt-in). Needs a JSONL file of questions with reference "
            'answers ({"question": ..., "reference": ...} per line) and keys for a real '
            "model: python -m benchmarks.bench_calibration FILE --target provider:model "
            "[--judge provider:model], or CALIBRATION_QUESTIONS=FILE "
            "CALIBRATION_TARGET=provider:model make bench"
        )
        return
    chat = Chat(get_settings())
    providers = {s.partition(":")[0] for s in (options.target, options.judge or options.target)}
    missing = sorted({v for p in providers for v in chat.missing_env_vars(p)})
    if missing:
        yield f"calibration: skipped: set {', '.join(missing)} (in .env or the environment)"
        return
    questions = read_questions(options.questions, options.limit)
    content = PromptSet.model_validate(prompt_set(options, questions))
    loaded = LoadedPromptSet(options.questions, content, content.content_hash())
    with tempfile.TemporaryDirectory(prefix="sqd-calibration-") as tmp:
        url = options.database or f"sqlite:///{Path(tmp) / 'calibration.db'}"
        yield from asyncio.run(measure(url, loaded, chat, len(questions), options))


async def measure(url, loaded, chat: Chat, count: int, options: Options) -> list[str]:
    from study_query_dagster.db import DatabaseConnection
    from study_query_dagster.services.runs import start_or_resume_run, store_prompt_set
    from study_query_dagster.services.variation import ExactStrategy, VariationService
    from study_query_dagster.services.variation.calibration import auroc
    from study_query_dagster.services.variation.runner import opened

    db = DatabaseConnection(url)
    db.init_db()
    root = f"bench-{uuid.uuid4().hex[:8]}"
    store_prompt_set(db, loaded, root)
    await start_or_resume_run(db, NAME, root, chat)
    async with opened(db, NAME, root, None, chat) as (service, scope):
        await service.equivalence_classes(scope)
        await service.dispersion(scope)
        report = await service.calibration(scope)
        naive = VariationService(db, ExactStrategy())
        await naive.equivalence_classes(scope)
        naive_report = await naive.dispersion(scope)
        usage = service.judge.usage()
    naive_se = {(r["prompt"], r["target"]): r.get("semantic_entropy") for r in naive_report.rows}
    graded = [g for g in report.graded if "semantic_entropy" in g.scores]
    wrong = [not g.correct for g in graded]

    def area(label: str, scores) -> str:
        value = auroc(scores, wrong)
        shown = "undefined (all right or all wrong)" if value is None else f"{value:.3f}"
        return f"  AUROC {label:<40} {shown}"

    out = [
        f"calibration: {len(graded)} of {count} questions x {options.samples} answers "
        f"({options.target}; judge {options.judge or options.target}), accuracy "
        f"{report.accuracy:.3f} ({sum(wrong)} wrong)",
        area(
            "semantic entropy (entailment classes)", [g.scores["semantic_entropy"] for g in graded]
        ),
        area(
            "naive entropy (exact-match classes)", [naive_se[g.prompt_id, g.target] for g in graded]
        ),
        area("1 - modal share", [g.scores["one_minus_modal_share"] for g in graded]),
    ]
    likely = [g.scores.get("likelihood_semantic_entropy") for g in graded]
    if all(v is not None for v in likely):
        out.append(area("likelihood semantic entropy", likely))
    answers = count * options.samples
    calls = usage.get("judge_provider_calls", 0)
    out.append(
        f"  judge calls: {calls:,} ({calls / answers:.2f} per answer, "
        f"{usage.get('judge_unparsed_replies', 0)} unreadable replies)"
    )
    db.dispose()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("questions", nargs="?", type=Path)
    parser.add_argument("--target", default=DEFAULT_TARGET, help="provider:model")
    parser.add_argument("--judge", default=None, help="provider:model (default: the target)")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--logprobs", action="store_true", help="the target returns them")
    parser.add_argument("--database", default=None, help="keep the captured calls here")
    args = parser.parse_args(argv)
    options = Options(**vars(args))
    try:
        for line in lines(options):
            print(line, flush=True)
    except BenchmarkInputError as error:
        print(f"calibration: {error}", file=sys.stderr)
        return 2
    return 0


def run() -> Iterator[str]:
    yield from lines(Options.from_env())


if __name__ == "__main__":
    sys.exit(main())
