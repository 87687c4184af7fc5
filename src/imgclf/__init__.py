"""imgclf: train, evaluate and serve image classifiers from folders of labelled images.

The package root imports nothing heavy, so that `imgclf --help` answers without
loading TensorFlow. Import the submodules for the real work.
"""

__version__ = "0.1.0"
