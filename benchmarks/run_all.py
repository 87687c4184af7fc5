"""Run the benchmarks one after the other and print their results as one JSON line.

    .venv/bin/python benchmarks/run_all.py                        # `make bench`: about 10 minutes on 2 cores
    .venv/bin/python benchmarks/run_all.py --with-fashion-mnist   # adds about 15 minutes

Each benchmark runs as its own process, so no two of them compete for the CPU. Their notes
go to stderr as they come; stdout receives {"results": [...]} with one object per benchmark.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from common import emit, note

HERE = Path(__file__).resolve().parent
BENCHMARKS = [
    ["help_time.py"],
    ["train_throughput.py"],
    ["accuracy.py", "digits"],
    ["accuracy.py", "sign-language-digits"],
]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Run help_time, train_throughput and the digits and sign-language-digits accuracy "
                    "benchmarks in turn; print their results as one JSON line.")
    parser.add_argument("--with-fashion-mnist", action="store_true",
                        help="Also run the Fashion-MNIST accuracy benchmark (about 15 minutes).")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    plan = BENCHMARKS + ([["accuracy.py", "fashion-mnist"]] if args.with_fashion_mnist else [])
    results, failed = [], []
    for script, *script_args in plan:
        label = " ".join([script, *script_args])
        note(f"== {label}")
        process = subprocess.run([sys.executable, str(HERE / script), *script_args], stdout=subprocess.PIPE, text=True)
        if process.returncode != 0:
            failed.append(label)
            note(f"{label} failed with exit code {process.returncode}")
            continue
        results.append(json.loads(process.stdout.strip().splitlines()[-1]))
    emit({"results": results, "failed": failed})
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
