"""A profile of one `imgclf train` epoch: input pipeline, augmentation layers, model.

    .venv/bin/python benchmarks/profile_training.py
    .venv/bin/python benchmarks/profile_training.py --image-size 100 --batch-size 32 --epochs 2

Builds the pieces `imgclf.training.train` uses (decode_split, make_dataset, build_augmenter,
build_model) on a split of the sign-language digits and times each alone in images/s, over
whole passes of the training split:

- `input_pipeline`: make_dataset without augmentation (shuffled index batches gathered
  from the decoded cache);
- `augmentation_pipeline`: the same plus the augmentation layers, as `imgclf train` runs it;
- `augmentation_<layer>`: the pipeline with one augmentation layer alone;
- `model_train_step`: `fit` on batches already held in memory, no augmentation, so the
  figure is the model's forward and backward pass alone;
- `model_train_step_no_resize`: the same model without its input `Resizing` layer, which at
  an unchanged size still runs antialiased bilinear resampling;
- `full_fit`: `fit` on the augmentation pipeline, as `imgclf train` runs it, without
  validation and callbacks.

Each `fit` figure leaves out a first, untimed epoch that traces the graph.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import SHARED_ROOT, emit, imgclf_executable, machine_facts, note, run_timed, skip, wide_env

DEFAULT_DATA = SHARED_ROOT / "datasets" / "sign-language-digits"

# The augmentation settings of the baseline script, as in train_throughput.py.
AUGMENTATION = {
    "rotation_degrees": 20, "width_shift": 0.2, "height_shift": 0.2, "shear_degrees": 0.2,
    "zoom": 0.2, "horizontal_flip": True, "fill_mode": "nearest",
}

# Each augmentation layer alone: the subset of AUGMENTATION that build_augmenter turns into it.
ONE_LAYER_SETTINGS = {
    "flip": {"horizontal_flip": True},
    "rotation": {"rotation_degrees": 20},
    "translation": {"width_shift": 0.2, "height_shift": 0.2},
    "shear": {"shear_degrees": 0.2},
    "zoom": {"zoom": 0.2},
}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Time the parts of an imgclf training epoch (input pipeline, each augmentation layer, "
                    "the model's train step) on the sign-language digits. Prints one JSON line.")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Dataset root (default: %(default)s).")
    parser.add_argument("--image-size", type=int, default=100, help="Square input size in pixels (default: 100).")
    parser.add_argument("--batch-size", type=int, default=32, help="Batch size (default: 32).")
    parser.add_argument("--epochs", type=int, default=2, help="Timed passes over the train split per figure (default: 2).")
    parser.add_argument("--model", choices=("simple_cnn", "small_cnn"), default="simple_cnn",
                        help="Model to time (default: simple_cnn).")
    parser.add_argument("--seed", type=int, default=42, help="Seed of the split (default: 42).")
    parser.add_argument("--deterministic", action="store_true",
                        help="Turn on TensorFlow op determinism first, as `train.deterministic: true` does.")
    parser.add_argument("--skip-model", action="store_true",
                        help="Time the input pipeline and augmentation only, not the model.")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        skip("profile_training", f"dataset folder {args.data} not found; pass --data DIR")
    return args


def images_per_second(dataset, n_images: int, passes: int) -> float:
    """Median images/s over `passes` full iterations of a `tf.data` dataset."""
    rates = []
    for _ in range(passes):
        started = time.perf_counter()
        for _ in dataset:
            pass
        rates.append(n_images / (time.perf_counter() - started))
    return statistics.median(rates)


def make_epoch_timer():
    """Create a Keras callback whose `seconds` list receives the wall time of each epoch."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds = []

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._started)

    return EpochTimer()


def fit_rate(model, dataset, n_images: int, passes: int) -> float:
    """Median images/s of `model.fit` over `passes` epochs after one untimed tracing epoch."""
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    timer = make_epoch_timer()
    model.fit(dataset, epochs=passes + 1, callbacks=[timer], verbose=0)
    return statistics.median(n_images / seconds for seconds in timer.seconds[1:])


def strip_resizing(model):
    """Rebuild `model` without its input `Resizing` layer, for input already at the model's size."""
    import keras

    size = model.get_layer("resize").output.shape[1:]
    inputs = keras.Input(shape=tuple(size), name="image")
    x = inputs
    for layer in model.layers[1:]:
        if layer.name == "resize":
            continue
        x = layer.__class__.from_config(layer.get_config())(x)
    return keras.Model(inputs, x, name=f"{model.name}_no_resize")


def main(argv=None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    facts = machine_facts()
    work = Path(tempfile.mkdtemp(prefix="imgclf-profile-"))
    run_timed([imgclf_executable(), "split", str(args.data), "--out", str(work / "split"), "--seed", str(args.seed),
               "--json"], env=wide_env())

    import keras
    import tensorflow as tf

    from imgclf.augmentation import build_augmenter
    from imgclf.config import AugmentationConfig, ModelConfig
    from imgclf.models import build_model
    from imgclf.pipeline import decode_split, make_dataset
    from imgclf.splitting import read_split

    keras.utils.set_random_seed(args.seed)
    if args.deterministic:
        tf.config.experimental.enable_op_determinism()
    size = (args.image_size, args.image_size)
    split = read_split(work / "split")
    started = time.perf_counter()
    decoded = decode_split(split.rows["train"], split.classes, size, work / "cache")
    decode_seconds = time.perf_counter() - started
    n_train = len(decoded)
    note(f"decoded {n_train} training images at {size[0]}x{size[1]} in {decode_seconds:.2f} s")

    figures = {}
    plain = make_dataset(decoded, args.batch_size, shuffle=True, seed=args.seed)
    figures["input_pipeline"] = images_per_second(plain, n_train, args.epochs)
    augmentation = AugmentationConfig(**AUGMENTATION)
    augmenter = build_augmenter(augmentation, args.seed)
    augmented = make_dataset(decoded, args.batch_size, shuffle=True, seed=args.seed, augmenter=augmenter)
    figures["augmentation_pipeline"] = images_per_second(augmented, n_train, args.epochs)
    for name, settings in ONE_LAYER_SETTINGS.items():
        alone = build_augmenter(AugmentationConfig(fill_mode=augmentation.fill_mode, **settings), args.seed)
        dataset = make_dataset(decoded, args.batch_size, shuffle=True, seed=args.seed, augmenter=alone)
        figures[f"augmentation_{name}"] = images_per_second(dataset, n_train, args.epochs)
    for name, rate in figures.items():
        note(f"{name}: {rate:.0f} images/s")

    if args.skip_model:
        emit_profile(args, n_train, decode_seconds, figures, facts)
        return
    in_memory = plain.cache()
    for _ in in_memory:  # fill the cache so the timed epochs read batches from memory
        pass
    model_config = ModelConfig(name=args.model)
    model = build_model(model_config, size, len(split.classes))
    figures["model_train_step"] = fit_rate(model, in_memory, n_train, args.epochs)
    note(f"model_train_step ({args.model}, batches in memory): {figures['model_train_step']:.0f} images/s")
    bare = strip_resizing(build_model(model_config, size, len(split.classes)))
    figures["model_train_step_no_resize"] = fit_rate(bare, in_memory, n_train, args.epochs)
    note(f"model_train_step_no_resize: {figures['model_train_step_no_resize']:.0f} images/s")
    full = build_model(model_config, size, len(split.classes))
    figures["full_fit"] = fit_rate(full, augmented, n_train, args.epochs)
    note(f"full_fit (augmentation pipeline + model): {figures['full_fit']:.0f} images/s")

    emit_profile(args, n_train, decode_seconds, figures, facts)


def emit_profile(args, n_train: int, decode_seconds: float, figures: dict, facts: dict) -> None:
    emit({
        "benchmark": "profile_training",
        "settings": {"model": args.model, "image_size": args.image_size, "batch_size": args.batch_size,
                     "epochs": args.epochs, "train_images": n_train, "augmentation": AUGMENTATION,
                     "op_determinism": args.deterministic},
        "decode_seconds": round(decode_seconds, 2),
        "images_per_second": {name: round(rate, 1) for name, rate in figures.items()},
        "machine": facts,
    })


if __name__ == "__main__":
    main()
