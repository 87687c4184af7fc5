"""TensorBoard records beyond Keras' per-epoch scalars: the resolved config and the confusion matrix."""

from __future__ import annotations

from pathlib import Path

TENSORBOARD_DIR = "tensorboard"


def write_config_text(run_dir: Path, config_yaml: str) -> None:
    """Log the resolved config under the Text tab (as a code block, so YAML indentation survives)."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR / "config"))
    with writer.as_default():
        tf.summary.text("config", "```\n" + config_yaml + "\n```", step=0)
    writer.close()


def write_confusion_image(run_dir: Path, png_path: Path, split: str, step: int) -> None:
    """Log a confusion-matrix PNG under the Images tab, at `step` (the run's best epoch)."""
    import tensorflow as tf

    image = tf.io.decode_png(tf.io.read_file(str(png_path)), channels=3)
    writer = tf.summary.create_file_writer(str(run_dir / TENSORBOARD_DIR / "evaluation"))
    with writer.as_default():
        tf.summary.image(f"confusion_matrix/{split}", image[None], step=step)
    writer.close()
