"""`make materialize` (the CLI) runs the whole graph headless and reads `.env` the way
`dagster dev` does: the resources see its variables, and a variable already set wins."""

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import func, select

from study_query_dagster.db import DatabaseConnection, RawCall
from tests.support.materialize import summary_rows
from tests.support.pipeline import write_prompt_set

SET = """
    name: tiny
    prompts:
      - {id: a, text: "alpha"}
      - {id: b, text: "beta"}
    targets:
      - {provider: offline, model: offline-echo}
    samples: 2
"""


def test_materialize_reads_dotenv_and_the_environment_wins(tmp_path):
    write_prompt_set(tmp_path / "sets", "tiny", SET)
    (tmp_path / ".env").write_text(
        "DATABASE_URL=sqlite:///from-dotenv.db\n"
        "PROMPT_SETS_DIR=sets\n"
        "EXPORTS_DIR=exports-from-dotenv\n"
        "REPORTS_DIR=reports-from-dotenv\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PROMPT_SETS_DIR")}
    env.update(DAGSTER_HOME=str(tmp_path / "home"), EXPORTS_DIR="exports-from-env")
    done = subprocess.run(
        [sys.executable, "-m", "study_query_dagster.cli", "materialize"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    table = summary_rows(done.stdout)
    assert table["tiny"][:3] == ["OK", "4", "0"] and table["(analytics)"] == ["OK"]

    db = DatabaseConnection(f"sqlite:///{tmp_path / 'from-dotenv.db'}")
    with db.session_scope() as session:
        assert session.scalar(select(func.count()).select_from(RawCall)) == 4
    db.dispose()
    assert not (tmp_path / "data").exists()  # the default database was not used
    assert list(Path(tmp_path, "exports-from-env").glob("*.csv"))
    assert not (tmp_path / "exports-from-dotenv").exists()
    # the run's study report and its exports per set and run
    [report] = Path(tmp_path, "reports-from-dotenv", "tiny").glob("*.html")
    assert report.stem in done.stdout
    assert sorted(p.name for p in Path(tmp_path, "exports-from-env", "tiny", report.stem).iterdir()) == [
        "answers.csv", "calls.csv", "targets.csv",
    ]  # fmt: skip
