"""Defaults shared by the core and the CLI, kept free of heavy imports."""

# Pillow's decompression-bomb warning threshold: about 89.5 megapixels.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_RATIOS = "0.7,0.15,0.15"
