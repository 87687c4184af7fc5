#!/usr/bin/env python3
"""Measure the scanner and the training engine, each comparison in one run.

1. scan: files per second of `imgclf.scan.scan_dataset` (read, SHA-256, full decode, perceptual
   hash) on the sign-language digits, with an empty scan cache and then with the cache filled.
2. feature cache: seconds per frozen-backbone epoch of the hymenoptera transfer recipe
   (EfficientNet-Lite0 at 224 px), training the head on cached features against running the
   backbone every epoch (`train.feature_cache: false`).
3. precision: seconds per epoch and validation accuracy of the sign-language `small_cnn` config
   in float32 and in mixed bfloat16.

Prints one JSON line on stdout; progress goes to stderr.

    .venv/bin/python benchmarks/engine.py [--skip scan,cache,precision]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
IMGCLF = [sys.executable, "-c", "from imgclf.cli.main import run; run()"]


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def bench_scan(work: Path) -> dict:
    from imgclf.scan import scan_dataset

    root = SHARED / "datasets" / "sign-language-digits"
    cache = work / "scan-cache"
    results = {}
    for label in ("first", "cached"):
        started = time.perf_counter()
        scan = scan_dataset(root, cache_dir=cache)
        seconds = time.perf_counter() - started
        results[label] = {"files": scan.n_files, "seconds": round(seconds, 3),
                          "files_per_second": round(scan.n_files / seconds, 1)}
        log(f"scan {label}: {scan.n_files} files in {seconds:.2f} s")
    results["speedup"] = round(results["cached"]["files_per_second"] / results["first"]["files_per_second"], 1)
    return results


def _train(config: str, work: Path, name: str, overrides: list[str]) -> dict:
    command = [*IMGCLF, "train", "--config", config,
               f"output.runs_dir={work / 'runs'}", f"output.name={name}", "output.tensorboard=false",
               f"data.cache_dir={work / 'cache'}", *overrides]
    subprocess.run(command, check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run = work / "runs" / name
    history = json.loads((run / "history.json").read_text())
    record = json.loads((run / "run.json").read_text())
    return {"history": history, "record": record}


def bench_feature_cache(work: Path) -> dict:
    results = {}
    for label, cache in (("cached_features", "true"), ("backbone_every_epoch", "false")):
        outcome = _train("configs/hymenoptera.yaml", work, f"cache-{cache}",
                         ["train.epochs=3", "train.fine_tune_epochs=0", f"train.feature_cache={cache}",
                          "train.early_stopping_patience=0"])
        phase = outcome["record"]["training"]["phases"][0]
        results[label] = {"phase_seconds": phase["seconds"], "seconds_per_epoch": round(phase["seconds"] / 3, 2),
                          "feature_extraction_seconds": phase.get("feature_extraction_seconds"),
                          "val_accuracy": outcome["history"][-1]["val_accuracy"]}
        log(f"{label}: {phase['seconds']} s for 3 frozen epochs")
    results["speedup"] = round(results["backbone_every_epoch"]["phase_seconds"] / results["cached_features"]["phase_seconds"], 1)
    return results


def bench_precision(work: Path) -> dict:
    split = work / "sign-split"
    if not split.exists():
        subprocess.run([*IMGCLF, "split", str(SHARED / "datasets" / "sign-language-digits"), "--out", str(split),
                        "--seed", "42"], check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    for precision in ("none", "bfloat16"):
        outcome = _train("configs/sign_language_digits.yaml", work, f"precision-{precision}",
                         [f"data.path={split}", "train.epochs=4", "train.early_stopping_patience=0",
                          f"train.mixed_precision={precision}"])
        phase = outcome["record"]["training"]["phases"][0]
        results["float32" if precision == "none" else precision] = {
            "seconds_per_epoch": round(phase["seconds"] / 4, 2),
            "train_images_per_second": phase["train_images_per_second"],
            "val_accuracy_after_4_epochs": outcome["history"][-1]["val_accuracy"],
        }
        log(f"{precision}: {phase['seconds']} s for 4 epochs")
    results["bfloat16_speed_ratio"] = round(
        results["float32"]["seconds_per_epoch"] / results["bfloat16"]["seconds_per_epoch"], 2)
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip", default="", help="Comma-separated parts to skip: scan, cache, precision.")
    args = parser.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    if not (SHARED / "datasets").is_dir():
        log(f"{SHARED / 'datasets'} not found; these benchmarks need the shared datasets")
        return 2
    work = Path(tempfile.mkdtemp(prefix="imgclf-engine-"))
    results = {"load_average": os.getloadavg()[0], "nproc": os.cpu_count()}
    try:
        if "scan" not in skip:
            results["scan"] = bench_scan(work)
        if "cache" not in skip:
            results["feature_cache"] = bench_feature_cache(work)
        if "precision" not in skip:
            results["precision"] = bench_precision(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
