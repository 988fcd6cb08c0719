"""Start-up time of the command line: ``vireid --help`` and ``vireid config -c FILE``.

Reading a config must not import torch or any method (the options schemas of
the methods are torch-free, docs/architecture.md#config-package): each command is
run as a fresh process, ``--runs`` times; the median wall time is reported with
the time of ``python -c "import torch"`` on the same machine for scale. Prints
one JSON object.

    python benchmarks/cli_speed.py [--runs 5] [--config configs/sysu/clipreid_vitb16.yaml]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _median_s(command: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, cwd=REPO)
        times.append(time.perf_counter() - start)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--config", default="configs/sysu/clipreid_vitb16.yaml")
    args = parser.parse_args()
    python = sys.executable
    cli = [python, "-m", "vireid"]
    print(json.dumps({
        "help_s": _median_s([*cli, "--help"], args.runs),
        "config_s": _median_s([*cli, "config", "-c", args.config], args.runs),
        "import_torch_s": _median_s([python, "-c", "import torch"], args.runs),
        "runs": args.runs,
    }))


if __name__ == "__main__":
    main()
