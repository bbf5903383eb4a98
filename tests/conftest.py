import pytest

from tests.support.pipeline import no_stale_state_storage

pytest_plugins = ["tests.support.db", "tests.support.llm", "tests.support.deployment"]


@pytest.fixture(autouse=True)
def _no_stale_defs_state_storage():
    """Every test starts without a "defs state storage": one that an earlier test's closed
    instance left in Dagster's context variable makes the next `materialize` in this worker
    fail with "Attempted to resolve undefined DagsterInstance weakref"."""
    with no_stale_state_storage():
        yield
