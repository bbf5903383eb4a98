"""A run of the study job in its own process, on the instance in $DAGSTER_HOME (for the drills
that kill or race runs):

    python -m tests.support.run_study_job PARTITION [ASSET ...]

Resources come from the SQD_TEST_* variables (`get_study_job`), or with SQD_TEST_PRODUCTION=1
from the environment as the code location reads it (`get_production_study_job`: its executor
is the one STUDY_JOB_EXECUTOR names). With asset names, only those assets (and their checks)
run, as "Materialize selected" in the UI does. If $SQD_TEST_GO names a file, the run starts only
once that file exists (so several processes start together). Prints the run id, then exits 0
if the run succeeded.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import dagster as dg

from tests.support.pipeline import get_production_study_job, get_study_job


def main(partition: str, assets: list[str]) -> int:
    with dg.DagsterInstance.get() as instance:
        instance.add_dynamic_partitions("prompt_sets", [partition])
        go = os.environ.get("SQD_TEST_GO")
        if go:
            Path(f"{go}.ready-{os.getpid()}").touch()
            while not Path(go).exists():
                time.sleep(0.005)
        production = os.environ.get("SQD_TEST_PRODUCTION") == "1"
        job = get_production_study_job if production else get_study_job
        result = dg.execute_job(
            dg.reconstructable(job), instance,
            tags={"dagster/partition": partition},
            asset_selection=[dg.AssetKey(a) for a in assets] or None,
        )  # fmt: skip
        print(result.run_id, flush=True)
        return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2:]))
