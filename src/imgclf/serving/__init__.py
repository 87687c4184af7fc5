"""Serving a model over HTTP: `imgclf serve` and `create_app`.

A `.tflite` bundle is served with LiteRT, NumPy, Pillow and the web stack alone, without
importing TensorFlow, so a serving image for it needs no TensorFlow. This package imports
FastAPI, which comes with `pip install 'imgclf[serve]'`.
"""

from imgclf.serving.app import create_app
from imgclf.serving.config import ServeConfig, load_serve_config
from imgclf.serving.model import ServedModel

__all__ = ["ServeConfig", "ServedModel", "create_app", "load_serve_config"]
