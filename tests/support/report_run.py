"""A small study run with known answers, for tests of the per-set results and the study report:
2 prompts x 2 targets of one model (two temperatures) x 3 samples through the fake server,
whose replies are scripted so the matrix is known exactly:

    prompt  cold (temperature 0)   warm (temperature 1)
    fr      Paris x3               Paris x2, one refusal (HTTP 400, a result: the run succeeds)
    au      Canberra x3            Canberra x2, Sydney x1

Which sample gets which answer depends on the order requests arrive; the counts do not."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import dagster as dg

from .fake_llm_server import FakeLLMServer, Fault
from .pipeline import make_resources, study_assets_and_checks, write_prompt_set

SET = """
    name: report-demo
    description: Two temperatures of one model, asked for capitals.
    system: Answer with the city only.
    prompts:
      - {id: fr, text: "What is the capital of France?"}
      - {id: au, text: "What is the capital of Australia?"}
    targets:
      - {provider: openai, model: gpt-4o-mini, label: cold, params: {temperature: 0}}
      - {provider: openai, model: gpt-4o-mini, label: warm, params: {temperature: 1}}
    samples: 3
"""
EXPECTED = {
    ("fr", "cold"): [("answer", "Paris", 3)],
    ("fr", "warm"): [("answer", "Paris", 2), ("failure", None, 1)],
    ("au", "cold"): [("answer", "Canberra", 3)],
    ("au", "warm"): [("answer", "Canberra", 2), ("answer", "Sydney", 1)],
}
SELECTION = dg.AssetSelection.assets("prompt_set", "inference_run", "study_results")


def script_answers(server: FakeLLMServer) -> None:
    lock = threading.Lock()
    seen: Counter = Counter()

    def cell(request) -> tuple[str, float]:
        question = request.body["messages"][-1]["content"]
        return question, request.body.get("temperature")

    def nth(request) -> int:
        with lock:
            seen[cell(request)] += 1
            return seen[cell(request)]

    def reply(request) -> str:
        question, temperature = cell(request)
        city = "Paris" if "France" in question else "Canberra"
        if temperature == 1 and "Australia" in question and nth(request) == 3:
            return "Sydney"
        return city

    def fault(request):
        question, temperature = cell(request)
        if temperature == 1 and "France" in question and nth(request) == 1:
            return Fault(status=400)
        return None

    server.reply_fn = reply
    server.fault_fn = fault


def run_demo(db_url: str, tmp_path: Path, server: FakeLLMServer, instance=None):
    """Materialize the demo set through study_results; returns (result, resources)."""
    script_answers(server)
    prompt_dir = tmp_path / "sets"
    write_prompt_set(prompt_dir, "report-demo", SET)
    resources = make_resources(db_url, prompt_dir, server.url)

    def go(inst):
        inst.add_dynamic_partitions("prompt_sets", ["report-demo"])
        return dg.materialize(
            study_assets_and_checks(), selection=SELECTION, partition_key="report-demo",
            instance=inst, resources=resources, raise_on_error=False,
        )  # fmt: skip

    if instance is not None:
        return go(instance), resources
    with dg.instance_for_test() as inst:
        return go(inst), resources
