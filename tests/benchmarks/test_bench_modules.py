"""Every benchmark `make bench` finds imports and offers `run()` (a renamed name elsewhere in the
package breaks a benchmark long before anyone runs `make bench`)."""

import importlib
import pkgutil

import pytest

import benchmarks

NAMES = sorted(
    m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
)


@pytest.mark.parametrize("name", NAMES)
def test_benchmark_imports_and_offers_run(name):
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.run)
