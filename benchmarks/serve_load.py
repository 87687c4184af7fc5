#!/usr/bin/env python3
"""Serving throughput, latency and memory of `imgclf serve` against the Flask yardstick.

    .venv/bin/python benchmarks/serve_load.py --model digits=RUN:BUNDLE:IMAGE [--model ...]

For each model, on one machine and in one run:

1. the bare runtime's single-image decode plus inference is timed in this process, for the
   latency target at concurrency 1;
2. the yardstick (`straightforward_server.py`: Flask, `model.predict` on a batch of one per
   request) serves the run's `model.keras`, while `imgclf serve` serves the bundle (LiteRT on
   its `model.tflite`, or the `.tflite` file named). With both running, `load.py` measures
   them in alternating rounds at concurrency 1 and 8, and each figure is the round with the
   median requests per second;
3. 2,000 requests at concurrency 16 check imgclf for failures and resident-memory growth;
4. `imgclf serve` runs at concurrency 8 once per setting of `SERVER_SETTINGS` (micro-batching
   and LiteRT threads).

The yardstick resizes uploads to `model.input_shape`, which an imgclf model leaves open (it
resizes inside the graph), so it gets a copy of the same weights behind a fixed input layer.
The yardstick needs Flask (`pip install flask`); `load.py` and the yardstick are read from
`../shared/baseline`. Both servers run on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from common import SHARED_ROOT, emit, imgclf_executable, machine_facts, note

BASELINE = SHARED_ROOT / "baseline"
# Requests per measurement: fewer for the yardstick, whose requests take tens of milliseconds.
YARDSTICK_COUNTS = {1: 150, 8: 400}
IMGCLF_COUNTS = {1: 600, 8: 2000}
SOAK_COUNT, SOAK_CONCURRENCY = 2000, 16
# Server settings compared at concurrency 8, as `imgclf serve` options: micro-batching off, the
# defaults (batches of up to 8 made of whatever is queued), waiting 2 or 5 ms for a batch, and
# one LiteRT thread instead of one per CPU.
SERVER_SETTINGS = [
    ("--max-batch-size", "1"),
    (),
    ("--max-latency-ms", "2"),
    ("--max-batch-size", "16", "--max-latency-ms", "5"),
    ("--threads", "1"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_kb(pid: int) -> dict:
    """Return the resident set size now (VmRSS) and at its peak (VmHWM), in kB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0])
    return fields


class Server:
    """A server process on a loopback port, stopped with SIGTERM."""

    def __init__(self, command: list[str], port: int, log_path: Path):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(command, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))

    def wait(self, probe, seconds: float = 180) -> float:
        """Poll `probe(url)` until it returns True; return the seconds waited."""
        started = time.perf_counter()
        while time.perf_counter() - started < seconds:
            if self.process.poll() is not None:
                sys.exit(f"error: server exited with code {self.process.returncode}; see {self._log.name}")
            if probe(self.url):
                return time.perf_counter() - started
            time.sleep(0.2)
        self.stop()
        sys.exit(f"error: server not ready after {seconds} s; see {self._log.name}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def imgclf_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/ready", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def port_open(url: str) -> bool:
    port = int(url.rsplit(":", 1)[1])
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def run_load(url: str, image: Path, count: int, concurrency: int) -> dict:
    command = [sys.executable, str(BASELINE / "load.py"), url + "/predict", str(image), "--count", str(count),
               "--concurrency", str(concurrency), "--timeout", "600"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=700)
    if done.returncode != 0:
        sys.exit(f"error: load.py exited with code {done.returncode}: {done.stderr.strip()[-500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def fixed_input_copy(run_dir: Path, image_size: tuple[int, int], out: Path) -> Path:
    """Save the run's model behind a fixed (height, width, 3) input, which the yardstick needs."""
    import keras

    model = keras.saving.load_model(run_dir / "model.keras", compile=False, safe_mode=True)
    inputs = keras.Input((*image_size, 3))
    keras.Model(inputs, model(inputs)).save(out)
    return out


def start_yardstick(run_dir: Path, image_size: tuple[int, int], work: Path) -> Server:
    model = fixed_input_copy(run_dir, image_size, work / "yardstick.keras")
    port = free_port()
    server = Server([sys.executable, str(BASELINE / "straightforward_server.py"), str(model), "--labels",
                     str(run_dir / "classes.json"), "--port", str(port)], port, work / "yardstick.log")
    server.wait(port_open)
    return server


def start_imgclf(model: Path, work: Path, name: str, *options: str) -> Server:
    port = free_port()
    command = [imgclf_executable(), "serve", str(model), "--port", str(port), "--no-access-log", *options]
    server = Server(command, port, work / f"{name}.log")
    server.wait(imgclf_ready)
    return server


def median_of(runs: list[dict]) -> dict:
    """Return the run with the median requests per second, plus every round's figures."""
    ordered = sorted(runs, key=lambda run: run["rps"])
    return {**ordered[len(ordered) // 2], "rounds_rps": [run["rps"] for run in runs],
            "rounds_p50_ms": [round(run["p50_ms"], 3) for run in runs]}


def measure_both(run_dir: Path, model: Path, image: Path, image_size: tuple[int, int], work: Path,
                 rounds: int) -> tuple[dict, dict]:
    """Measure the yardstick and imgclf in alternating rounds, both servers up all along.

    Alternating keeps a change in the machine's other load from favouring one of them.
    """
    yardstick_server = start_yardstick(run_dir, image_size, work)
    imgclf_server = start_imgclf(model, work, "imgclf")
    try:
        imgclf = {"rss_after_warm_up_kb": rss_kb(imgclf_server.process.pid)}
        run_load(yardstick_server.url, image, 5, 1)
        run_load(imgclf_server.url, image, 20, 1)
        runs = {(name, c): [] for name in ("yardstick", "imgclf") for c in YARDSTICK_COUNTS}
        for round_index in range(rounds):
            for concurrency in YARDSTICK_COUNTS:
                runs["yardstick", concurrency].append(
                    run_load(yardstick_server.url, image, YARDSTICK_COUNTS[concurrency], concurrency))
                runs["imgclf", concurrency].append(
                    run_load(imgclf_server.url, image, IMGCLF_COUNTS[concurrency], concurrency))
            note(f"  round {round_index + 1}: " + ", ".join(
                f"{name} c{c} {values[-1]['rps']} rps" for (name, c), values in runs.items()))
        yardstick = {f"c{c}": median_of(runs["yardstick", c]) for c in YARDSTICK_COUNTS}
        yardstick["rss_kb"] = rss_kb(yardstick_server.process.pid)
        for concurrency in IMGCLF_COUNTS:
            imgclf[f"c{concurrency}"] = median_of(runs["imgclf", concurrency])
        yardstick_server.stop()
        imgclf["soak"] = run_load(imgclf_server.url, image, SOAK_COUNT, SOAK_CONCURRENCY)
        imgclf["rss_after_soak_kb"] = rss_kb(imgclf_server.process.pid)
    finally:
        yardstick_server.stop()
        imgclf_server.stop()
    return yardstick, imgclf


def measure_settings(model: Path, image: Path, work: Path, rounds: int) -> list[dict]:
    """Measure each of `SERVER_SETTINGS` at concurrency 8, the settings alternating per round."""
    runs: dict[tuple[str, ...], list[dict]] = {setting: [] for setting in SERVER_SETTINGS}
    for _ in range(rounds):
        for index, setting in enumerate(SERVER_SETTINGS):
            server = start_imgclf(model, work, f"setting{index}", *setting)
            try:
                run_load(server.url, image, 20, 8)
                result = run_load(server.url, image, IMGCLF_COUNTS[8], 8)
                result["mean_batch_size"] = _batch_size_mean(server.url)
            finally:
                server.stop()
            runs[setting].append(result)
    rows = []
    for setting, results in runs.items():
        median = median_of(results)
        rows.append({"options": " ".join(setting) or "(defaults)", **median})
    return rows


def _batch_size_mean(url: str) -> Optional[float]:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as response:
        text = response.read().decode()
    values = {}
    for line in text.splitlines():
        if line.startswith(("imgclf_batch_size_sum", "imgclf_batch_size_count")):
            name, value = line.split()
            values[name] = float(value)
    count = values.get("imgclf_batch_size_count")
    return round(values["imgclf_batch_size_sum"] / count, 2) if count else None


def bare_runtime_ms(model: Path, image: Path, repeats: int = 300) -> dict:
    """Time `load_image` on the file's bytes plus one runtime call on the result; return median milliseconds."""
    import numpy as np

    from imgclf.imageio import load_image
    from imgclf.prediction import Predictor

    predictor = Predictor.load(model)
    data = image.read_bytes()
    decode_times, inference_times = [], []
    for _ in range(repeats + 10):
        started = time.perf_counter()
        pixels = load_image(data, predictor.image_size, predictor.max_pixels)
        decoded = time.perf_counter()
        predictor.predict_arrays(pixels[None])
        finished = time.perf_counter()
        decode_times.append(decoded - started)
        inference_times.append(finished - decoded)
    decode_ms = 1000 * float(np.median(decode_times[10:]))
    inference_ms = 1000 * float(np.median(inference_times[10:]))
    return {"decode_ms": round(decode_ms, 3), "inference_ms": round(inference_ms, 3),
            "total_ms": round(decode_ms + inference_ms, 3)}


def summarise(name: str, yardstick: dict, imgclf: dict, bare: dict) -> dict:
    soak_growth = imgclf["rss_after_soak_kb"]["VmRSS"] - imgclf["rss_after_warm_up_kb"]["VmRSS"]
    return {
        "model": name,
        "throughput_ratio_c8": round(imgclf["c8"]["rps"] / yardstick["c8"]["rps"], 1),
        "throughput_ratio_c1": round(imgclf["c1"]["rps"] / yardstick["c1"]["rps"], 1),
        "p50_c1_over_bare": round(imgclf["c1"]["p50_ms"] / bare["total_ms"], 2),
        "rss_after_warm_up_mb": round(imgclf["rss_after_warm_up_kb"]["VmRSS"] / 1024, 1),
        "rss_peak_mb": round(imgclf["rss_after_soak_kb"]["VmHWM"] / 1024, 1),
        "rss_growth_over_soak_mb": round(soak_growth / 1024, 1),
        "soak_failures": imgclf["soak"]["failures"],
    }


def parse_model(text: str) -> tuple[str, Path, Path, Path]:
    name, _, paths = text.partition("=")
    parts = paths.split(":")
    if not name or len(parts) != 3:
        raise argparse.ArgumentTypeError(f"--model {text!r}: expected NAME=RUN_DIR:MODEL:IMAGE")
    run_dir, model, image = (Path(part) for part in parts)
    for path in (run_dir / "model.keras", model, image):
        if not path.exists():
            raise argparse.ArgumentTypeError(f"--model {text!r}: {path} not found")
    return name, run_dir, model, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=parse_model, required=True,
                        help="NAME=RUN_DIR:MODEL:IMAGE: the run (its model.keras goes to the yardstick), what "
                             "`imgclf serve` gets (a bundle, or a .tflite file inside one), and the image every "
                             "request sends. Repeat for several models.")
    parser.add_argument("--rounds", type=int, default=3, help="Alternating rounds per measurement (default 3).")
    parser.add_argument("--no-settings", action="store_true", help="Skip the comparison of server settings.")
    args = parser.parse_args()
    for needed in ("load.py", "straightforward_server.py"):
        if not (BASELINE / needed).is_file():
            sys.exit(f"error: {BASELINE / needed} not found; the yardstick and load generator live in ../shared/baseline")
    from imgclf.runs import resolve_model

    results = {"benchmark": "serve_load", "machine": machine_facts(), "models": []}
    with tempfile.TemporaryDirectory(prefix="serve_load_") as folder:
        work = Path(folder)
        for name, run_dir, model, image in args.model:
            image_size = resolve_model(model).image_size
            note(f"{name}: the bare runtime on {model}")
            bare = bare_runtime_ms(model, image)
            note(f"{name}: the Flask yardstick on {run_dir / 'model.keras'} against imgclf serve on {model}")
            yardstick, imgclf = measure_both(run_dir, model, image, image_size, work, args.rounds)
            settings = [] if args.no_settings else measure_settings(model, image, work, max(1, args.rounds - 1))
            entry = {"name": name, "model": str(model), "image": str(image), "image_bytes": image.stat().st_size,
                     "input_size": image_size, "yardstick": yardstick, "imgclf": imgclf,
                     "settings_c8": settings, "bare_runtime": bare,
                     "summary": summarise(name, yardstick, imgclf, bare)}
            note(json.dumps(entry["summary"]))
            results["models"].append(entry)
    emit(results)


if __name__ == "__main__":
    main()
