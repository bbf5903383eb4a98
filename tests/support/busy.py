"""Run a command beside CPU-burning processes: `python -m tests.support.busy [-n N] -- cmd...`.

`make test-busy` runs the suite this way. A test that passes only on a quiet machine depends on
timing, which the project does not allow: races are forced with barriers and events instead.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

BURN = "while True: pass"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", "--burners", type=int, default=2, help="CPU-burning processes")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(args.burners)]
    try:
        return subprocess.call(command)
    finally:
        for burner in burners:
            burner.kill()
            burner.wait()


if __name__ == "__main__":
    sys.exit(main())
