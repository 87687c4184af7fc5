"""Export a trained run as a bundle of deployable model files, and verify a bundle.

`export_bundle` writes Keras, SavedModel (TensorFlow Serving layout) and TensorFlow Lite files
with an `imgclf.json` manifest (`imgclf.bundle`); `verify_bundle` checks them again. Importing
this package does not import TensorFlow.
"""

from imgclf.export.core import ExportOptions, export_bundle
from imgclf.export.verify import verify_bundle

__all__ = ["ExportOptions", "export_bundle", "verify_bundle"]
