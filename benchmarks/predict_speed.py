"""Prediction speed of every export format, against a per-image `model.predict` loop and the bare runtime.

    .venv/bin/python benchmarks/predict_speed.py RUN [--images DIR] [--repeats 3] [--baseline-images 300]

RUN is a finished run directory, for example one that benchmarks/accuracy.py trained with
configs/sign_language_digits.yaml. DIR defaults to ../shared/datasets/sign-language-digits
(2,062 photos, 100x100 JPEG apart from three 3024x3024 ones). Phases, in one process tree:

1. export: `imgclf export RUN` writes one bundle with keras, savedmodel and float32 tflite, then
   adds dynamic, float16 and int8 tflite. Sizes, parity figures and the int8 validation accuracy
   come from its imgclf.json. Test accuracy of every file (val for a run without a test split),
   and the difference between the SavedModel's encoded-bytes signature and imgclf's decoder on
   those files, are measured here.
2. baseline: a loop of Pillow decode, resize and `model.predict` on a batch of one, per image,
   on the run's model.keras in a process of its own, over the first --baseline-images files.
3. imgclf predict: the command in a process of its own on the whole folder, once per model file,
   timed from process start to exit (`wall`) and over the streaming phase it reports (`stream`).
4. bare runtime: each runtime's throughput in batches of 64 on arrays decoded beforehand, and
   its latency on a batch of one. Then `Predictor.predict_files` runs in this process on the same
   files: its CPU time minus decoding and the bare model is what the pipeline adds.

Every throughput is the best of --repeats runs, because other load on a shared machine only
slows a run down. CPU seconds per image are reported beside them: other load inflates those less.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import SHARED_ROOT, emit, imgclf_executable, machine_facts, note, run_timed, wide_env

DEFAULT_IMAGES = SHARED_ROOT / "datasets" / "sign-language-digits"
BATCH_SIZE = 64
LATENCY_CALLS = 200
# Model files by bundle key, in the order the bundle lists them.
TARGETS = {
    "keras": "model.keras",
    "savedmodel": None,  # savedmodel/<name>/1, read from the manifest
    "tflite": "model.tflite",
    "tflite-dynamic": "model_dynamic.tflite",
    "tflite-float16": "model_float16.tflite",
    "tflite-int8": "model_int8.tflite",
}
STREAM_LINE = re.compile(r"predicted ([\d,]+) of ([\d,]+) files in ([\d.]+) s")

# The per-image loop most tutorials show, run in its own process: Pillow decode and resize,
# then `model.predict` on a batch of one. Prints images per second over all but the first
# five images, which include the first call's tracing.
BASELINE_CODE = """
import json, sys, time
import numpy as np
import keras
from PIL import Image

model_file, height, width, paths = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
model = keras.saving.load_model(model_file, safe_mode=True)
started = None
for index, path in enumerate(paths):
    if index == 5:
        started = time.perf_counter()
    image = Image.open(path).convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    model.predict(np.asarray(image, dtype=np.float32)[np.newaxis], verbose=0)
seconds = time.perf_counter() - started
print(json.dumps({"n_images": len(paths) - 5, "seconds": seconds, "images_per_second": (len(paths) - 5) / seconds}))
"""


def export_bundle(run: Path, bundle: Path) -> dict:
    """Export every format into `bundle`, timing each command; return {step: seconds or the rejection}."""
    imgclf = imgclf_executable()
    steps = {
        "keras+savedmodel+tflite": ["--format", "keras,savedmodel,tflite"],
        "tflite-dynamic": ["--format", "tflite", "--quantize", "dynamic"],
        "tflite-float16": ["--format", "tflite", "--quantize", "float16"],
        "tflite-int8": ["--format", "tflite", "--quantize", "int8"],
    }
    seconds = {}
    for name, options in steps.items():
        note(f"export {name}")
        completed = run_timed([imgclf, "export", str(run), "--out", str(bundle), *options], env=wide_env(),
                              check=not name.startswith("tflite-"))
        if completed.returncode != 0:
            # A quantized model that loses too much accuracy is rejected, which is a result to report.
            seconds[name] = {"exit_code": completed.returncode, "stderr": completed.stderr.strip().splitlines()[-1]}
            note(f"export {name} rejected: {seconds[name]['stderr']}")
        else:
            seconds[name] = round(completed.seconds, 1)
    return seconds


def model_paths(bundle: Path, manifest: dict) -> dict[str, Path]:
    paths = {}
    for entry in manifest["artifacts"]:
        paths[entry["key"]] = bundle / entry["path"]
    return {key: paths[key] for key in TARGETS if key in paths}


def image_files(folder: Path) -> tuple[list[str], list]:
    """Return every file under `folder`, and the paths among them that decode as images."""
    from imgclf.errors import ImageError
    from imgclf.imageio import load_image
    from imgclf.scan import iter_files

    files = iter_files([str(folder)])
    return files, [path for path in files if _decodes(path, load_image, ImageError)]


def _decodes(path: str, load_image, image_error) -> bool:
    try:
        load_image(path, (8, 8))
    except image_error:
        return False
    return True


def measure_baseline(run: Path, paths: list[str], image_size: tuple[int, int]) -> dict:
    note(f"baseline: Pillow decode + model.predict per image on {len(paths)} images")
    completed = run_timed([sys.executable, "-c", BASELINE_CODE, str(run / "model.keras"), str(image_size[0]),
                           str(image_size[1]), *paths], env=wide_env())
    result = json.loads(completed.stdout.strip().splitlines()[-1])
    result["images_per_second"] = round(result["images_per_second"], 1)
    result["seconds"] = round(result["seconds"], 2)
    return result


def measure_predict_command(target: Path, folder: Path, n_images: int, repeats: int, work: Path) -> dict:
    """Run `imgclf predict` on the folder `repeats` times; keep the fastest run's figures."""
    best = None
    for _ in range(repeats):
        completed = run_timed([imgclf_executable(), "predict", str(target), str(folder), "--out",
                               str(work / "results.csv"), "--no-progress"], env=wide_env(), check=False)
        match = STREAM_LINE.search(completed.stderr)
        if completed.returncode not in (0, 5) or match is None:
            sys.exit(f"error: imgclf predict {target} exited with code {completed.returncode}:\n{completed.stderr[-2000:]}")
        stream_seconds = float(match.group(3))
        if best is None or completed.seconds < best["wall_seconds"]:
            best = {"wall_seconds": round(completed.seconds, 2), "stream_seconds": stream_seconds,
                    "cpu_seconds": round(completed.cpu_seconds, 2)}
    best["images_per_second_wall"] = round(n_images / best["wall_seconds"], 1)
    best["images_per_second_stream"] = round(n_images / best["stream_seconds"], 1)
    best["cpu_ms_per_image"] = round(best["cpu_seconds"] / n_images * 1000, 3)
    return best


def _best_of(repeats: int, work) -> tuple[float, float]:
    """Run `work` `repeats` times; return the shortest wall time and the CPU time of that run."""
    best = None
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        work()
        timing = (time.perf_counter() - started, time.process_time() - cpu_started)
        if best is None or timing[0] < best[0]:
            best = timing
    return best


def measure_runtime(runtime, pixels, repeats: int) -> dict:
    """Batched throughput (best of `repeats`), CPU per image, and batch-of-one latency of a runtime."""
    import numpy as np

    def batches() -> None:
        for start in range(0, len(pixels), BATCH_SIZE):
            runtime.predict(pixels[start:start + BATCH_SIZE])

    runtime.predict(pixels[:BATCH_SIZE])
    seconds, cpu_seconds = _best_of(repeats, batches)
    latencies = []
    for index in range(LATENCY_CALLS + 20):
        one = pixels[index % len(pixels)][np.newaxis]
        started = time.perf_counter()
        runtime.predict(one)
        if index >= 20:
            latencies.append((time.perf_counter() - started) * 1000)
    latencies.sort()
    return {
        "images_per_second": round(len(pixels) / seconds, 1),
        "cpu_ms_per_image": round(cpu_seconds / len(pixels) * 1000, 3),
        "latency_ms_p50": round(statistics.median(latencies), 3),
        "latency_ms_p90": round(latencies[int(0.9 * len(latencies))], 3),
    }


def measure_pipeline(predictor, files: list[str], n_images: int, repeats: int) -> dict:
    """`Predictor.predict_files` in this process over every file: throughput and CPU per image."""
    seconds, cpu_seconds = _best_of(repeats, lambda: sum(1 for _ in predictor.predict_files(files)))
    return {"images_per_second": round(n_images / seconds, 1),
            "cpu_ms_per_image": round(cpu_seconds / n_images * 1000, 3)}


def scoring_split(run: Path):
    """Return the run's split and the name of the split to score on: test, else val."""
    from imgclf.export.metadata import read_run

    split = read_run(run).read_split()
    return split, "test" if split.rows["test"] else "val"


def split_accuracy(run: Path, predictors: dict, image_size) -> dict:
    """Top-1 accuracy of each model file on the run's test split (val when it has no test split)."""
    import numpy as np

    from imgclf.export.parity import accuracy, decode_sample

    split, name = scoring_split(run)
    sample = decode_sample(name, split.rows[name], split.classes, image_size)
    scores = {}
    for key, predictor in predictors.items():
        probabilities = np.concatenate([predictor.predict_arrays(sample.images[start:start + BATCH_SIZE])
                                        for start in range(0, len(sample), BATCH_SIZE)])
        scores[key] = round(accuracy(probabilities, sample.labels), 4)
    return {"split": name, "n_images": len(sample), **scores}


def bytes_signature_difference(savedmodel: Path, run: Path, predictor) -> dict:
    """Compare the SavedModel's encoded-bytes signature with imgclf's decoder on the scored split's files."""
    import numpy as np
    import tensorflow as tf

    split, name = scoring_split(run)
    paths = [path for path, _ in split.rows[name]]
    signature = tf.saved_model.load(str(savedmodel)).signatures["serving_default"]
    from_bytes = np.concatenate([
        signature(image_bytes=tf.constant([Path(path).read_bytes() for path in paths[start:start + BATCH_SIZE]]))
        ["probabilities"].numpy()
        for start in range(0, len(paths), BATCH_SIZE)
    ])
    from_imgclf = np.array([result.probabilities for result in predictor.predict(paths)])
    difference = np.abs(from_bytes - from_imgclf).max(axis=1)
    return {"split": name, "n_images": len(paths), "max_abs_diff": round(float(difference.max()), 6),
            "median_max_abs_diff": round(float(np.median(difference)), 6),
            "top1_agreement": round(float(np.mean(from_bytes.argmax(1) == from_imgclf.argmax(1))), 4)}


def ratios(commands: dict, in_process: dict, bare: dict, decode_cpu_ms: float, baseline: dict) -> dict:
    """Speed-ups over the baseline, and each runtime's pipeline against the bare runtime."""
    fastest = max(commands, key=lambda key: commands[key]["images_per_second_wall"])
    against_bare = {}
    for key in commands:
        model_cpu = bare[key]["cpu_ms_per_image"]
        against_bare[key] = {
            "command_wall": round(commands[key]["images_per_second_wall"] / bare[key]["images_per_second"], 2),
            "command_stream": round(commands[key]["images_per_second_stream"] / bare[key]["images_per_second"], 2),
            "in_process": round(in_process[key]["images_per_second"] / bare[key]["images_per_second"], 2),
            # CPU the pipeline spends per image beyond decoding and the model itself.
            "overhead_cpu_ms_per_image": round(in_process[key]["cpu_ms_per_image"] - decode_cpu_ms - model_cpu, 3),
        }
    return {
        "fastest_runtime": fastest,
        "fastest_command_wall_vs_baseline": round(commands[fastest]["images_per_second_wall"]
                                                  / baseline["images_per_second"], 1),
        "tflite_command_wall_vs_baseline": round(commands["tflite"]["images_per_second_wall"]
                                                 / baseline["images_per_second"], 1),
        "predict_vs_bare": against_bare,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="Run directory written by `imgclf train`.")
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="Folder of images to predict.")
    parser.add_argument("--repeats", type=int, default=3, help="Runs per throughput figure; the best is kept.")
    parser.add_argument("--baseline-images", type=int, default=300, help="Images in the per-image predict loop.")
    args = parser.parse_args()
    if not args.images.is_dir():
        sys.exit(f"error: {args.images}: image folder not found; pass --images DIR")

    import numpy as np

    import imgclf
    from imgclf.imageio import load_image

    with tempfile.TemporaryDirectory(prefix="predict-speed-") as temporary:
        work = Path(temporary)
        bundle = work / "bundle"
        export_seconds = export_bundle(args.run, bundle)
        manifest = json.loads((bundle / "imgclf.json").read_text("utf-8"))
        image_size = (manifest["input"]["height"], manifest["input"]["width"])
        targets = model_paths(bundle, manifest)

        files, usable = image_files(args.images)
        note(f"{len(files)} files in {args.images}, {len(usable)} of them images")
        baseline = measure_baseline(args.run, usable[:args.baseline_images + 5], image_size)
        commands = {}
        for key, target in targets.items():
            note(f"imgclf predict with {key}")
            commands[key] = measure_predict_command(target, args.images, len(usable), args.repeats, work)

        note("decoding every image once for the bare runtimes")
        cpu_started = time.process_time()
        pixels = np.stack([load_image(path, image_size) for path in usable]).astype(np.float32)
        decode_cpu_ms = round((time.process_time() - cpu_started) / len(usable) * 1000, 3)
        predictors = {key: imgclf.load(target) for key, target in targets.items()}
        bare, in_process = {}, {}
        for key, predictor in predictors.items():
            note(f"bare runtime and in-process pipeline: {key}")
            bare[key] = measure_runtime(predictor.runtime, pixels, args.repeats)
            in_process[key] = measure_pipeline(predictor, files, len(usable), args.repeats)
        accuracies = split_accuracy(args.run, predictors, image_size)
        bytes_signature = bytes_signature_difference(targets["savedmodel"], args.run, predictors["keras"])

    entries = {entry["key"]: entry for entry in manifest["artifacts"]}
    emit({
        "benchmark": "predict_speed",
        "machine": machine_facts(),
        "run": str(args.run),
        "images": {"folder": str(args.images), "n_files": len(files), "n_images": len(usable),
                   "image_size": list(image_size)},
        "export_seconds": export_seconds,
        "bundle_bytes": {key: entry["bytes"] for key, entry in entries.items()},
        "parity": {key: {name: entry["parity"][name] for name in ("n_images", "max_abs_diff", "top1_agreement")}
                   for key, entry in entries.items()},
        "validation_accuracy": {key: entry["accuracy"] for key, entry in entries.items() if "accuracy" in entry},
        "split_accuracy": accuracies,
        "savedmodel_bytes_signature_vs_imgclf": bytes_signature,
        "baseline_per_image_predict": baseline,
        "decode_cpu_ms_per_image": decode_cpu_ms,
        "imgclf_predict": commands,
        "in_process_pipeline": in_process,
        "bare_runtime": bare,
        "ratios": ratios(commands, in_process, bare, decode_cpu_ms, baseline),
    })


if __name__ == "__main__":
    main()
