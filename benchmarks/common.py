"""Helpers shared by the benchmark scripts: hardware facts, timed subprocesses, output.

Every benchmark prints one JSON line of results on stdout and notes for people on stderr.
This module imports nothing heavy, so it never pulls TensorFlow into a benchmark process.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Optional, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_ROOT = REPO_ROOT.parent / "shared"


def note(text: str) -> None:
    """Write one line for people on stderr."""
    print(text, file=sys.stderr, flush=True)


def emit(result: dict) -> None:
    """Write the results as one JSON line on stdout."""
    print(json.dumps(result, ensure_ascii=False), flush=True)


def skip(benchmark: str, reason: str) -> None:
    """Report a benchmark that cannot run here (a dataset or script is absent) and exit with status 0."""
    note(f"{benchmark}: skipped, {reason}")
    emit({"benchmark": benchmark, "skipped": reason})
    sys.exit(0)


def imgclf_executable() -> str:
    """Return the `imgclf` console script beside the running Python, else the one on PATH."""
    beside = Path(sys.executable).parent / "imgclf"
    if beside.is_file():
        return str(beside)
    found = shutil.which("imgclf")
    if found is None:
        sys.exit("error: the imgclf command is not installed; run `make install` and use .venv/bin/python")
    return found


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory_gib() -> Optional[float]:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    return None


def _version(package: str) -> Optional[str]:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def source_state() -> dict:
    """Return the checked-out commit and whether src/ differs from it, so a figure names its code."""
    def git(*args: str) -> str:
        process = subprocess.run(["git", *args], capture_output=True, text=True, cwd=REPO_ROOT)
        return process.stdout.strip() if process.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD")
    return {"commit": commit or None, "src_modified": bool(git("status", "--porcelain", "--", "src")) if commit else None}


def machine_facts() -> dict:
    """CPU count available to this process, CPU model, RAM, load, date, package versions and commit."""
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "nproc": usable,
        "cpu_model": _cpu_model(),
        "memory_gib": _memory_gib(),
        "load_average_1min": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in ("imgclf", "tensorflow", "keras", "numpy", "pillow")},
        "source": source_state(),
    }


@dataclass
class Completed:
    """A finished subprocess: its output, exit code and wall time in seconds.

    `stderr_lines` pairs each stderr line with the seconds from the start of the command to
    the moment the line arrived, which times the phases of a command that logs them.
    `cpu_seconds` is the user plus system CPU time of the command and its children, which
    other load on the machine inflates less than the wall time.
    """

    args: list[str]
    returncode: int
    stdout: str
    stderr_lines: list[tuple[float, str]]
    seconds: float
    cpu_seconds: float

    @property
    def stderr(self) -> str:
        return "\n".join(line for _, line in self.stderr_lines)


def run_timed(args: Sequence[str], env: Optional[dict] = None, cwd: Optional[Path] = None,
              check: bool = True) -> Completed:
    """Run a command to completion, capturing stdout and time-stamped stderr lines, and time it.

    Raises:
        SystemExit: when `check` is set and the command exits non-zero; the message names
            the command and the tail of its stderr.
    """
    usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    process = subprocess.Popen(list(args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env, cwd=cwd, bufsize=1)
    stderr_lines: list[tuple[float, str]] = []

    def read_stderr() -> None:
        for line in process.stderr:
            stderr_lines.append((time.perf_counter() - started, line.rstrip("\n")))

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    stdout = process.stdout.read()
    returncode = process.wait()
    reader.join()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_seconds = (usage.ru_utime - usage_before.ru_utime) + (usage.ru_stime - usage_before.ru_stime)
    done = Completed(list(args), returncode, stdout, stderr_lines, seconds, cpu_seconds)
    if check and returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        sys.exit(f"error: `{' '.join(args)}` exited with code {returncode}:\n{tail}")
    return done


def wide_env(**extra: str) -> dict:
    """Return the current environment with Rich's output width raised, so log lines stay unwrapped."""
    env = dict(os.environ, COLUMNS="400", TF_CPP_MIN_LOG_LEVEL="2")
    env.update(extra)
    return env
