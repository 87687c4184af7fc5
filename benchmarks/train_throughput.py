"""Training throughput of `imgclf train` against the straightforward ImageDataGenerator script.

Both train the same simple_cnn (Conv32-Pool-Conv64-Pool-Flatten-Dense64-softmax) with Adam
on the same images, at the same image size and batch size, with the same augmentation
settings, for the same number of epochs, one process after the other on this machine.

    .venv/bin/python benchmarks/train_throughput.py
    .venv/bin/python benchmarks/train_throughput.py --image-size 100 --batch-size 32 --epochs 3 --repeats 2

Steps:

1. `imgclf split DATA` writes train/val/test manifests.
2. The baseline's DATA/train/<class>/ and DATA/val/<class>/ folders are built from those
   manifests as symbolic links in a temporary folder, so both programs read the same files.
3. The baseline script runs as its own process; it times whole epochs (training plus
   validation) from Keras' on_epoch_begin to on_epoch_end.
4. `imgclf train` runs with a fresh `data.cache_dir`, so it decodes every image once
   before `fit`. Its stderr lines are time-stamped as they arrive to time that decoding.

Throughput is training images divided by seconds, per epoch, and the median over the
epochs. The like-for-like ratio divides imgclf's whole-epoch figure by the baseline's,
because the baseline's epochs include validation. imgclf's own `run.json` figure
(`training.train_images_per_second`) leaves validation out and is reported beside it.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import SHARED_ROOT, emit, imgclf_executable, machine_facts, note, run_timed, skip, wide_env

DEFAULT_DATA = SHARED_ROOT / "datasets" / "sign-language-digits"
BASELINE_SCRIPT = SHARED_ROOT / "baseline" / "straightforward_train.py"

# The baseline's ImageDataGenerator settings, in imgclf's config keys. Its shear_range=0.2
# is an angle in degrees (Keras' legacy apply_affine_transform calls np.deg2rad on it).
BASELINE_AUGMENTATION = {
    "rotation_degrees": 20,
    "width_shift": 0.2,
    "height_shift": 0.2,
    "shear_degrees": 0.2,
    "zoom": 0.2,
    "horizontal_flip": True,
    "fill_mode": "nearest",
}

EPOCH_LINE = re.compile(r"epoch (\d+)/(\d+): .*\(([\d.]+) s, ([\d.]+) images/s\)")
TRAINING_COUNT = re.compile(r"training (\d+) images")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Compare the training throughput (images/s per epoch) of `imgclf train` with the "
                    "straightforward ImageDataGenerator script on the same split. Prints one JSON line.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA,
                        help="Dataset root of class folders (default: %(default)s).")
    parser.add_argument("--baseline", type=Path, default=BASELINE_SCRIPT,
                        help="The baseline training script, run with this Python (default: %(default)s).")
    parser.add_argument("--image-size", type=int, default=100, help="Square input size in pixels (default: 100).")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size of both programs (default: 32).")
    parser.add_argument("--epochs", type=int, default=3, help="Epochs per run (default: 3).")
    parser.add_argument("--repeats", type=int, default=1,
                        help="Runs of each program, alternating baseline and imgclf (default: 1).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the split and of imgclf (default: 42).")
    parser.add_argument("--imgclf-override", action="append", default=[], metavar="KEY=VALUE",
                        help="Config override for `imgclf train` only, e.g. train.deterministic=false; repeatable.")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="Folder for the split, links, cache and runs; kept afterwards. "
                             "Default: a temporary folder that is removed.")
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.repeats < 1 or args.batch_size < 1:
        parser.error("--epochs, --repeats and --batch-size must be at least 1")
    if not args.data.is_dir():
        skip("train_throughput", f"dataset folder {args.data} not found; pass --data DIR")
    if not args.baseline.is_file():
        skip("train_throughput", f"baseline script {args.baseline} not found; pass --baseline FILE")
    return args


def read_manifest(path: Path) -> list[tuple[str, str]]:
    """Rows (path, label) of one split manifest written by `imgclf split`."""
    with open(path, newline="", encoding="utf-8") as handle:
        return [(row["path"], row["label"]) for row in csv.DictReader(handle)]


def link_baseline_folders(split_dir: Path, out: Path) -> dict[str, int]:
    """Build OUT/train/<class>/ and OUT/val/<class>/ of symbolic links to the manifests' files.

    A running index prefixes each link name, so two source files with one name never collide.
    Returns the number of links per split.
    """
    counts = {}
    for split in ("train", "val"):
        rows = read_manifest(split_dir / f"{split}.csv")
        for index, (source, label) in enumerate(rows):
            folder = out / split / label
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{index:06d}_{Path(source).name}").symlink_to(source)
        counts[split] = len(rows)
    return counts


def write_imgclf_config(path: Path, split_dir: Path, cache_dir: Path, runs_dir: Path, args) -> None:
    config = {
        "seed": args.seed,
        "data": {"path": str(split_dir), "image_size": args.image_size, "cache_dir": str(cache_dir)},
        "model": {"name": "simple_cnn"},
        "augmentation": BASELINE_AUGMENTATION,
        "train": {"epochs": args.epochs, "batch_size": args.batch_size, "optimizer": "adam",
                  "learning_rate": 0.001, "lr_schedule": "constant", "early_stopping_patience": 0},
        "output": {"runs_dir": str(runs_dir)},
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False), "utf-8")


def run_baseline(data_dir: Path, args) -> dict:
    command = [sys.executable, str(args.baseline), str(data_dir), "--size", str(args.image_size),
               "--epochs", str(args.epochs), "--batch", str(args.batch_size)]
    done = run_timed(command, env=wide_env())
    result = json.loads(done.stdout.strip().splitlines()[-1])
    rates = result["images_per_second"]
    return {
        "train_images": result["train_images"],
        "epoch_seconds": result["epoch_seconds"],
        "images_per_second": rates,
        "median_images_per_second": statistics.median(rates),
        "val_accuracy": result["val_accuracy"],
        "process_seconds": round(done.seconds, 2),
    }


def _first_time(lines: list[tuple[float, str]], pattern: str) -> float:
    for seconds, line in lines:
        if pattern in line:
            return seconds
    raise SystemExit(f"error: `imgclf train` logged no line containing {pattern!r}; its stderr changed format")


def run_imgclf(config_path: Path, overrides: list[str]) -> dict:
    done = run_timed([imgclf_executable(), "train", "--config", str(config_path), *overrides], env=wide_env())
    run_dir = Path(done.stdout.strip().splitlines()[-1])
    record = json.loads((run_dir / "run.json").read_text("utf-8"))
    epochs = [EPOCH_LINE.search(line) for _, line in done.stderr_lines]
    epochs = [match for match in epochs if match]
    count = TRAINING_COUNT.search(done.stderr)
    if not epochs or count is None:
        raise SystemExit("error: found no epoch or model summary lines in the stderr of `imgclf train`")
    n_train = int(count.group(1))
    epoch_seconds = [float(match.group(3)) for match in epochs]
    whole_epoch = [round(n_train / seconds, 1) for seconds in epoch_seconds]
    train_only = [float(match.group(4)) for match in epochs]

    # The split line is logged before decoding starts and the model line after the datasets
    # and the model are built, so the gap is decoding plus a fraction of a second of set-up.
    split_logged = _first_time(done.stderr_lines, "split folder")
    model_logged = _first_time(done.stderr_lines, "model simple_cnn")
    first_epoch_logged = _first_time(done.stderr_lines, "epoch 1/")
    return {
        "train_images": n_train,
        "epoch_seconds": epoch_seconds,
        "images_per_second": whole_epoch,
        "median_images_per_second": statistics.median(whole_epoch),
        "train_phase_images_per_second": train_only,
        "run_json_train_images_per_second": record["training"]["train_images_per_second"],
        "val_accuracy": round(record["training"]["best_metrics"].get("val_accuracy", float("nan")), 4),
        "startup_seconds": round(split_logged, 2),
        "decode_and_setup_seconds": round(model_logged - split_logged, 2),
        "fit_seconds": round(record["training"]["seconds"], 2),
        "first_epoch_logged_at": round(first_epoch_logged, 2),
        # Seconds the first epoch took beyond the median of the others: graph tracing, plus
        # decoding if it ever moved into the first epoch.
        "first_epoch_extra_seconds": round(epoch_seconds[0] - statistics.median(epoch_seconds[1:]), 2)
        if len(epoch_seconds) > 1 else None,
        "process_seconds": round(done.seconds, 2),
        "run_dir": str(run_dir),
    }


def time_decode_alone(split_dir: Path, image_size: int, cache_dir: Path) -> float:
    """Seconds `imgclf.pipeline.decode_split` takes for train plus val into an empty cache."""
    from imgclf.splitting import read_split
    from imgclf.pipeline import decode_split

    split = read_split(split_dir)
    started = time.perf_counter()
    for name in ("train", "val"):
        decode_split(split.rows[name], split.classes, (image_size, image_size), cache_dir)
    return time.perf_counter() - started


def summarize(baseline_runs: list[dict], imgclf_runs: list[dict]) -> dict:
    baseline = statistics.median(run["median_images_per_second"] for run in baseline_runs)
    whole = statistics.median(run["median_images_per_second"] for run in imgclf_runs)
    train_only = statistics.median(statistics.median(run["train_phase_images_per_second"]) for run in imgclf_runs)
    return {
        "baseline_median_images_per_second": round(baseline, 1),
        "imgclf_median_images_per_second": round(whole, 1),
        "ratio": round(whole / baseline, 2),
        "imgclf_train_phase_median_images_per_second": round(train_only, 1),
        "ratio_train_phase_vs_baseline_epoch": round(train_only / baseline, 2),
    }


def report(summary: dict, baseline_runs: list[dict], imgclf_runs: list[dict], decode_alone: float) -> None:
    for index, (base, ours) in enumerate(zip(baseline_runs, imgclf_runs), start=1):
        note(f"repeat {index}: baseline images/s per epoch {base['images_per_second']} "
             f"(process {base['process_seconds']} s); imgclf whole-epoch {ours['images_per_second']}, "
             f"training phase {ours['train_phase_images_per_second']} (process {ours['process_seconds']} s)")
        note(f"  imgclf: start-up {ours['startup_seconds']} s, decoding and set-up before fit "
             f"{ours['decode_and_setup_seconds']} s, fit {ours['fit_seconds']} s")
    note(f"decode_split alone (train + val, empty cache): {decode_alone:.2f} s")
    note(f"median images/s: baseline {summary['baseline_median_images_per_second']}, imgclf "
         f"{summary['imgclf_median_images_per_second']} (ratio {summary['ratio']}x); imgclf training phase "
         f"without validation {summary['imgclf_train_phase_median_images_per_second']} "
         f"({summary['ratio_train_phase_vs_baseline_epoch']}x)")


def main(argv=None) -> None:
    args = parse_args(argv)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="imgclf-throughput-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        facts = machine_facts()
        note(f"work folder {work}; {facts['nproc']} CPUs ({facts['cpu_model']}), load {facts['load_average_1min']}")
        split_dir = work / "split"
        run_timed([imgclf_executable(), "split", str(args.data), "--out", str(split_dir), "--seed", str(args.seed),
                   "--json"], env=wide_env())
        linked = link_baseline_folders(split_dir, work / "baseline-data")
        note(f"split {args.data}: train {linked['train']}, val {linked['val']} images, linked for the baseline")

        baseline_runs, imgclf_runs = [], []
        for repeat in range(args.repeats):
            note(f"repeat {repeat + 1}/{args.repeats}: baseline, {args.epochs} epochs")
            baseline_runs.append(run_baseline(work / "baseline-data", args))
            config_path = work / f"throughput-{repeat + 1}.yaml"
            write_imgclf_config(config_path, split_dir, work / f"cache-{repeat + 1}", work / "runs", args)
            note(f"repeat {repeat + 1}/{args.repeats}: imgclf train, {args.epochs} epochs, empty cache")
            imgclf_runs.append(run_imgclf(config_path, args.imgclf_override))
            cached = sorted(path.name for path in (work / f"cache-{repeat + 1}").glob("*.npy"))
            imgclf_runs[-1]["cache_files_written"] = len(cached)

        if {run["train_images"] for run in baseline_runs + imgclf_runs} != {linked["train"]}:
            raise SystemExit("error: the two programs trained on different numbers of images: "
                             f"baseline {baseline_runs[0]['train_images']}, imgclf {imgclf_runs[0]['train_images']}")
        decode_alone = time_decode_alone(split_dir, args.image_size, work / "cache-decode-only")
        summary = summarize(baseline_runs, imgclf_runs)
        report(summary, baseline_runs, imgclf_runs, decode_alone)
        emit({
            "benchmark": "train_throughput",
            "settings": {"data": str(args.data), "image_size": args.image_size, "batch_size": args.batch_size,
                         "epochs": args.epochs, "repeats": args.repeats, "seed": args.seed,
                         "imgclf_overrides": args.imgclf_override,
                         "augmentation": BASELINE_AUGMENTATION, "train_images": linked["train"],
                         "val_images": linked["val"]},
            **summary,
            "decode_alone_seconds": round(decode_alone, 2),
            "baseline_runs": baseline_runs,
            "imgclf_runs": imgclf_runs,
            "machine": facts,
        })
    finally:
        if args.work_dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
