"""Defaults shared by the core and the CLI, kept free of heavy imports."""

# Pillow's decompression-bomb warning threshold: about 89.5 megapixels.
DEFAULT_MAX_PIXELS = 89_478_485
DEFAULT_RATIOS = "0.7,0.15,0.15"
# Perceptual-hash bits two images may differ in and still count as near duplicates. In the tests,
# copies of a photo downscaled to half size and saved as JPEG stay within 2 bits, and to 40 % within
# 4. On the sign-language-digits photos (hands against a plain wall), 3 pairs of distinct photos are
# within 2 bits and 25 within 4, one of them across classes, so 4 would link different photos.
DEFAULT_NEAR_DISTANCE = 2
