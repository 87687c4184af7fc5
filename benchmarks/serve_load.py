#!/usr/bin/env python3
"""Serving throughput, latency and memory of `imgclf serve` against the Flask yardstick.

    .venv/bin/python benchmarks/serve_load.py --model digits=RUN:BUNDLE:IMAGE [--model ...]

For each model, on one machine and in one run:

1. the yardstick (`straightforward_server.py`: Flask, `model.predict` on a batch of one per
   request) serves the run's `model.keras`, and `load.py` measures it at concurrency 1 and 8;
2. `imgclf serve BUNDLE` (LiteRT on the bundle's `model.tflite`) is measured the same way,
   and once per micro-batching setting at concurrency 8;
3. 2,000 requests at concurrency 16 check for failures and resident-memory growth;
4. the bare runtime's single-image decode plus inference is timed in this process, for the
   latency target at concurrency 1.

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
# Micro-batching settings compared at concurrency 8: (max_batch_size, max_latency_ms).
BATCHING_SETTINGS = [(1, 0), (8, 0), (8, 2), (16, 5)]


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


def measure_yardstick(run_dir: Path, image: Path, image_size: tuple[int, int], work: Path) -> dict:
    model = fixed_input_copy(run_dir, image_size, work / "yardstick.keras")
    labels = run_dir / "classes.json"
    port = free_port()
    server = Server([sys.executable, str(BASELINE / "straightforward_server.py"), str(model), "--labels",
                     str(labels), "--port", str(port)], port, work / "yardstick.log")
    try:
        server.wait(port_open)
        run_load(server.url, image, 5, 1)
        results = {f"c{c}": run_load(server.url, image, count, c) for c, count in YARDSTICK_COUNTS.items()}
        results["rss_kb"] = rss_kb(server.process.pid)
    finally:
        server.stop()
    return results


def start_imgclf(bundle: Path, work: Path, name: str, *options: str) -> Server:
    port = free_port()
    command = [imgclf_executable(), "serve", str(bundle), "--port", str(port), "--no-access-log", *options]
    server = Server(command, port, work / f"{name}.log")
    server.wait(imgclf_ready)
    return server


def measure_imgclf(bundle: Path, image: Path, work: Path) -> dict:
    server = start_imgclf(bundle, work, "imgclf")
    try:
        results = {"rss_after_warm_up_kb": rss_kb(server.process.pid)}
        run_load(server.url, image, 20, 1)
        for concurrency, count in IMGCLF_COUNTS.items():
            results[f"c{concurrency}"] = run_load(server.url, image, count, concurrency)
        results["soak"] = run_load(server.url, image, SOAK_COUNT, SOAK_CONCURRENCY)
        results["rss_after_soak_kb"] = rss_kb(server.process.pid)
    finally:
        server.stop()
    return results


def measure_batching(bundle: Path, image: Path, work: Path) -> list[dict]:
    rows = []
    for max_batch_size, max_latency_ms in BATCHING_SETTINGS:
        server = start_imgclf(bundle, work, f"batch{max_batch_size}-{max_latency_ms}",
                              "--max-batch-size", str(max_batch_size), "--max-latency-ms", str(max_latency_ms))
        try:
            run_load(server.url, image, 20, 8)
            result = run_load(server.url, image, IMGCLF_COUNTS[8], 8)
            batches = _batch_size_mean(server.url)
        finally:
            server.stop()
        rows.append({"max_batch_size": max_batch_size, "max_latency_ms": max_latency_ms,
                     "mean_batch_size": batches, **result})
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


def bare_runtime_ms(bundle: Path, image: Path, repeats: int = 300) -> dict:
    """Median milliseconds of `load_image` on the file's bytes plus one LiteRT call on the result."""
    import numpy as np

    from imgclf.imageio import load_image
    from imgclf.prediction import Predictor

    predictor = Predictor.load(bundle)
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
        raise argparse.ArgumentTypeError(f"--model {text!r}: expected NAME=RUN_DIR:BUNDLE:IMAGE")
    run_dir, bundle, image = (Path(part) for part in parts)
    for path in (run_dir / "model.keras", bundle / "model.tflite", image):
        if not path.exists():
            raise argparse.ArgumentTypeError(f"--model {text!r}: {path} not found")
    return name, run_dir, bundle, image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", type=parse_model, required=True,
                        help="NAME=RUN_DIR:BUNDLE:IMAGE: the run (for the yardstick), its bundle with model.tflite, "
                             "and the image every request sends. Repeat for several models.")
    parser.add_argument("--no-batching-sweep", action="store_true", help="Skip the micro-batching settings.")
    args = parser.parse_args()
    for needed in ("load.py", "straightforward_server.py"):
        if not (BASELINE / needed).is_file():
            sys.exit(f"error: {BASELINE / needed} not found; the yardstick and load generator live in ../shared/baseline")
    results = {"benchmark": "serve_load", "machine": machine_facts(), "models": []}
    with tempfile.TemporaryDirectory(prefix="serve_load_") as folder:
        work = Path(folder)
        for name, run_dir, bundle, image in args.model:
            manifest = json.loads((bundle / "imgclf.json").read_text("utf-8"))
            image_size = (manifest["input"]["height"], manifest["input"]["width"])
            note(f"{name}: the Flask yardstick on {run_dir / 'model.keras'}")
            yardstick = measure_yardstick(run_dir, image, image_size, work)
            note(f"{name}: imgclf serve on {bundle}")
            imgclf = measure_imgclf(bundle, image, work)
            batching = [] if args.no_batching_sweep else measure_batching(bundle, image, work)
            note(f"{name}: the bare runtime")
            bare = bare_runtime_ms(bundle, image)
            entry = {"name": name, "image": str(image), "image_bytes": image.stat().st_size,
                     "input_size": image_size, "yardstick": yardstick, "imgclf": imgclf,
                     "batching_c8": batching, "bare_runtime": bare,
                     "summary": summarise(name, yardstick, imgclf, bare)}
            note(json.dumps(entry["summary"]))
            results["models"].append(entry)
    emit(results)


if __name__ == "__main__":
    main()
