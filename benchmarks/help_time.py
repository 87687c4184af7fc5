"""Wall time of `imgclf --help` and `imgclf train --help`, and a check that neither imports TensorFlow.

    .venv/bin/python benchmarks/help_time.py
    .venv/bin/python benchmarks/help_time.py --runs 20

Each command runs `--runs` times as a fresh process through the installed `imgclf` script,
and the median, minimum and maximum wall times are reported. The median CPU time
(user plus system) is reported too, because other load on a shared machine inflates it less
than the wall time. The start-up time of a bare `python -c pass` is reported beside them as
the floor that no command can beat. A second, separate process runs the same
Typer application in-process and lists which heavy modules (TensorFlow, Keras, NumPy,
scikit-learn, Matplotlib, Pillow) `sys.modules` holds after the help text is printed.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

from common import emit, imgclf_executable, machine_facts, note, run_timed, wide_env

TARGET_SECONDS = 0.5
HEAVY_MODULES = ("tensorflow", "keras", "numpy", "sklearn", "matplotlib", "PIL")
COMMANDS = {"imgclf --help": ["--help"], "imgclf train --help": ["train", "--help"]}

# Runs the CLI in-process, then reports the heavy modules it imported on the last stderr line.
MODULE_PROBE = """
import json, sys
from imgclf.cli.main import app
try:
    app(args={args!r}, prog_name="imgclf")
except SystemExit:
    pass
loaded = [name for name in {heavy!r} if name in sys.modules]
print("loaded-modules " + json.dumps(loaded), file=sys.stderr)
"""


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time `imgclf --help` and `imgclf train --help` and check that TensorFlow is not "
                    "imported. Prints one JSON line.")
    parser.add_argument("--runs", type=int, default=10, help="Runs of each command (default: 10).")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs {args.runs}: expected at least 1")
    return args


def time_command(command: list[str], runs: int) -> dict:
    seconds, cpu_seconds = [], []
    for _ in range(runs):
        done = run_timed(command, env=wide_env())
        seconds.append(done.seconds)
        cpu_seconds.append(done.cpu_seconds)
    return {
        "median_seconds": round(statistics.median(seconds), 3),
        "min_seconds": round(min(seconds), 3),
        "max_seconds": round(max(seconds), 3),
        "median_cpu_seconds": round(statistics.median(cpu_seconds), 3),
        "runs": runs,
    }


def loaded_modules(cli_args: list[str]) -> list[str]:
    """Heavy modules present in `sys.modules` after the CLI handled `cli_args` in-process."""
    probe = MODULE_PROBE.format(args=cli_args, heavy=HEAVY_MODULES)
    done = run_timed([sys.executable, "-c", probe], env=wide_env())
    for line in reversed(done.stderr.splitlines()):
        if line.startswith("loaded-modules "):
            return json.loads(line.removeprefix("loaded-modules "))
    raise SystemExit(f"error: the module probe printed no result; its stderr was:\n{done.stderr}")


def main(argv=None) -> None:
    args = parse_args(argv)
    facts = machine_facts()
    executable = imgclf_executable()
    floor = time_command([sys.executable, "-c", "pass"], args.runs)
    note(f"python -c pass: median {floor['median_seconds']:.3f} s over {args.runs} runs")

    results = {}
    for label, cli_args in COMMANDS.items():
        timing = time_command([executable, *cli_args], args.runs)
        modules = loaded_modules(cli_args)
        timing["heavy_modules_imported"] = modules
        timing["tensorflow_imported"] = "tensorflow" in modules
        timing["meets_target"] = timing["median_seconds"] <= TARGET_SECONDS and not timing["tensorflow_imported"]
        results[label] = timing
        note(f"{label}: median {timing['median_seconds']:.3f} s (min {timing['min_seconds']:.3f}, "
             f"max {timing['max_seconds']:.3f}, CPU {timing['median_cpu_seconds']:.3f}) over {args.runs} runs; "
             "heavy modules imported: "
             f"{', '.join(modules) or 'none'}")

    emit({
        "benchmark": "help_time",
        "target_median_seconds": TARGET_SECONDS,
        "python_startup": floor,
        "commands": results,
        "all_meet_target": all(timing["meets_target"] for timing in results.values()),
        "machine": facts,
    })


if __name__ == "__main__":
    main()
