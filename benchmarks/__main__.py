"""`make bench`: run every benchmarks/bench_*.py and print one ratio line per figure.

Each module exposes `run() -> Iterable[str]`. `make bench BENCH=bulk` runs only modules whose
name contains "bulk". Figures are ratios against a baseline measured in the same run.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import time
import traceback

import benchmarks


def main() -> int:
    wanted = os.environ.get("BENCH", "")
    names = sorted(
        m.name for m in pkgutil.iter_modules(benchmarks.__path__) if m.name.startswith("bench_")
    )
    failed = 0
    for name in names:
        if wanted and wanted not in name:
            continue
        print(f"## {name}", flush=True)
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"benchmarks.{name}")
            for line in module.run():
                print(line, flush=True)
        except Exception:
            failed += 1
            traceback.print_exc()
        print(f"   ({time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
