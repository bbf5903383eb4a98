"""The answer-variation assets per 1,000 answers, against producing those answers.

A scripted offline prompt set of 1,000 answers (50 prompts x 2 targets x 10 samples, answers
split 7/3 and 5/3/2, `embed: on` with the wordllama embedder) is materialized twice, so that
the second run has a baseline to drift from. Baseline, measured in the same run on the same
databases: `prompt_set` + `inference_run` + `response_embeddings` with their checks (capturing
and embedding the 1,000 answers). Measured: the six `variation` assets with their seven checks
on the same run (classes, dispersion, agreement, drift against the first run, calibration —
nothing to grade here — and answer clusters), with `exact`, `embedding` and `entailment`
equivalence (the offline provider as the judge: every judge call goes through InferenceService
and is captured, so this measures the judge's overhead without a model's latency; the second
run's verdicts are all cache hits). Both through `materialize` in process; best of two rounds.
SQLite, then PostgreSQL.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import yaml

from study_query_dagster import definitions
from tests.support.pipeline import make_resources

from .support import ratio_line

PROMPTS, SAMPLES = 50, 10
N = PROMPTS * 2 * SAMPLES
ROUNDS = 2
STUDY = dg.AssetSelection.assets("prompt_set", "inference_run", "response_embeddings")
VARIATION = dg.AssetSelection.groups("variation")


def write_prompt_set(folder: Path, name: str, variation: dict) -> None:
    body = {
        "name": name,
        "prompts": [{"id": f"q{i}", "text": f"Question {i}?"} for i in range(PROMPTS)],
        "targets": [
            {
                "provider": "offline",
                "model": "offline-echo",
                "label": "a",
                "params": {"offline_answers": {"*": {"Canberra": 7, "Sydney is the capital": 3}}},
            },
            {
                "provider": "offline",
                "model": "offline-echo",
                "label": "b",
                "params": {"offline_answers": {"*": {"Canberra.": 5, "Melbourne": 3, "Perth": 2}}},
            },
        ],
        "samples": SAMPLES,
        "embed": "on",
        "variation": variation,
    }
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def timed_materialize(resources, instance, name: str, selection) -> float:
    started = time.perf_counter()
    result = dg.materialize(
        [*definitions.defs.assets, *definitions.defs.asset_checks],
        partition_key=name,
        instance=instance,
        resources=resources,
        selection=selection,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
    )
    elapsed = time.perf_counter() - started
    assert result.success
    return elapsed


def measure(label: str, db_url: str) -> Iterator[str]:
    for strategy, variation in (
        ("exact", {"strategy": "exact"}),
        ("embedding", {"strategy": "embedding", "threshold": 0.15}),
        (
            "entailment",
            {
                "strategy": "entailment",
                "judge": {
                    "provider": "offline",
                    "model": "offline-judge",
                    "params": {"offline_judge": True},
                },
            },
        ),
    ):
        with tempfile.TemporaryDirectory(prefix="sqd-bench-var-") as folder:
            folder = Path(folder)
            resources = make_resources(
                db_url,
                folder,
                embedding_options={"provider": "wordllama"},
                exports_dir=folder / "exports",
            )
            produce, vary = [], []
            with dg.instance_for_test() as instance:
                for round_number in range(ROUNDS):
                    name = f"bench-variation-{strategy}-{round_number}"
                    write_prompt_set(folder, name, variation)
                    instance.add_dynamic_partitions("prompt_sets", [name])
                    timed_materialize(resources, instance, name, STUDY | VARIATION)  # 1st run
                    produce.append(timed_materialize(resources, instance, name, STUDY))
                    vary.append(timed_materialize(resources, instance, name, VARIATION))
        ours, baseline = min(vary), min(produce)
        yield ratio_line(
            f"variation assets + checks per {N:,} answers ({strategy}), {label}",
            ours * 1000,
            baseline * 1000,
            "ms",
            f"(vs capturing and embedding those answers; {ours / N * 1e6:,.0f} us per answer)",
        )


def run():
    from study_query_dagster.resources.database import dispose_shared_connections
    from tests.support.postgres import PostgresServer

    with tempfile.TemporaryDirectory(prefix="sqd-bench-app-") as tmp:
        yield from measure("SQLite", f"sqlite:///{Path(tmp) / 'app.db'}")
        dispose_shared_connections()
    server = PostgresServer.start()
    try:
        app = server.create_database()
        yield from measure("PostgreSQL", app.render_as_string(hide_password=False))
        dispose_shared_connections()
        server.drop_database(app)
    finally:
        server.stop()
