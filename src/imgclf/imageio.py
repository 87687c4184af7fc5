"""The one image decoding path shared by scanning, training, evaluation, prediction and serving.

Every caller turns a file or an upload into pixels through `decode_image` (full size) or
`load_image` (decoded, then resized), so a model sees the same numbers wherever it runs.

Policies, applied in this order:

1. Size check: width x height is read from the header and compared with `max_pixels`
   before any pixel is decoded. Over the limit raises `ImageError` (reason `too_many_pixels`).
2. Animated files (GIF, APNG, WebP, multi-page TIFF): the first frame is used.
3. EXIF orientation is applied, so a phone photo stored sideways arrives upright.
4. Mode conversion to 8-bit RGB:
   - `RGB`: kept. `L`, `1`, `CMYK`, `YCbCr`, `LAB`, `HSV`: converted by Pillow
     (grey is replicated into three channels).
   - Transparency (`RGBA`, `LA`, `La`, `RGBa`, `PA`, and `P` or `L` or `RGB` with a
     `transparency` entry) is composited onto an opaque white background (255, 255, 255),
     the colour most product and document photos are shot against.
   - 16-bit integer modes (`I;16`, `I;16B`, `I;16L`, `I;16N`) and 32-bit integer `I` are
     scaled from [0, 65535] to [0, 255] by `round(v / 257)`, values outside that range
     clipped. 32-bit float `F` is read as [0, 1] when every value lies there, otherwise as
     [0, 255]; either way clipped and rounded to 8 bits.
   - NOTE: 16-bit colour files (a 48-bit RGB or 64-bit RGBA PNG, a 16-bit grey PNG with
     alpha) reach this module already reduced to 8 bits by Pillow, which keeps the high
     byte (`v >> 8`). That differs from `round(v / 257)` by at most 1.
5. Resizing (`load_image` only): bilinear with Pillow's antialiasing, to exactly
   `(height, width)`; the aspect ratio is not kept ("stretch", as Keras'
   `flow_from_directory` does).

Empty, truncated and corrupt files raise `ImageError` with a short `reason` code that
reports and HTTP answers reuse.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import ImageError

BACKGROUND_RGB = (255, 255, 255)

# A truncated file must fail loudly rather than decode into grey padding.
ImageFile.LOAD_TRUNCATED_IMAGES = False
# Pillow warns about large images itself; open_image checks the caller's limit from the header.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

Source = Union[str, os.PathLike, bytes]

_TRANSPARENT_MODES = {"RGBA", "LA", "La", "RGBa", "PA"}
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}


def _describe(source: Source) -> str:
    return "uploaded image" if isinstance(source, bytes) else str(source)


def _read_bytes(source: Source) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        if os.path.exists(source) and not os.path.isdir(source) and not os.path.isfile(source):
            # A FIFO or device would block or never end; only regular files are read.
            raise ImageError(f"{source}: not a regular file (a pipe, socket or device)", reason="not_a_file")
        try:
            data = Path(source).read_bytes()
        except FileNotFoundError:
            raise ImageError(f"{source}: file not found", reason="not_found") from None
        except IsADirectoryError:
            raise ImageError(f"{source}: is a folder, not an image file", reason="not_a_file") from None
        except OSError as exc:
            raise ImageError(f"{source}: cannot be read ({exc.strerror})", reason="unreadable") from None
    if not data:
        raise ImageError(f"{_describe(source)}: empty file (0 bytes)", reason="empty")
    return data


def _raise_pillow_pixel_limit(max_pixels: int) -> None:
    # Pillow itself warns above Image.MAX_IMAGE_PIXELS and rejects images over twice that
    # (`Image._decompression_bomb_check` in Pillow 13), so a higher `max_pixels` must raise it too.
    # NOTE: Pillow's limit is process-wide, and this function only ever raises it.
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
        Image.MAX_IMAGE_PIXELS = max_pixels


def open_image(data: bytes, name: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open encoded image bytes and check the pixel limit from the header alone.

    Returns a lazily loaded Pillow image positioned on its first frame.

    Raises:
        ImageError: `not_an_image` when no decoder recognises the bytes,
            `too_many_pixels` when width x height exceeds `max_pixels`.
    """
    _raise_pillow_pixel_limit(max_pixels)
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(
            f"{name}: not a recognised image format (JPEG, PNG, WebP, TIFF, BMP and GIF are read)",
            reason="not_an_image",
        ) from None
    except Image.DecompressionBombError:
        raise ImageError(
            f"{name}: too many pixels for the limit of {max_pixels:,}; raise data.max_image_pixels "
            "if the file is trusted",
            reason="too_many_pixels",
        ) from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{name}: corrupt image header ({exc})", reason="corrupt") from None

    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"{name}: {width}x{height} = {width * height:,} pixels is over the limit of {max_pixels:,}; "
            "raise data.max_image_pixels if the file is trusted",
            reason="too_many_pixels",
        )
    return image


def load_first_frame(image: Image.Image, name: str) -> Image.Image:
    try:
        image.seek(0)
        image.load()
    except Image.DecompressionBombError:
        raise ImageError(f"{name}: too many pixels to decode safely", reason="too_many_pixels") from None
    except (OSError, SyntaxError, ValueError, EOFError, IndexError) as exc:
        text = str(exc)
        reason = "truncated" if "truncated" in text or isinstance(exc, EOFError) else "corrupt"
        raise ImageError(f"{name}: corrupt or truncated image ({text or type(exc).__name__})", reason=reason) from None
    return image


def _sixteen_bit_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    scaled = np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def _float_to_l(image: Image.Image) -> Image.Image:
    values = np.asarray(image, dtype=np.float64)
    finite = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        finite = finite * 255.0
    return Image.fromarray(np.clip(np.rint(finite), 0, 255).astype(np.uint8), mode="L")


def _flatten_alpha(image: Image.Image) -> Image.Image:
    if image.mode == "La":
        # Pillow converts premultiplied La only to LA.
        image = image.convert("LA")
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, BACKGROUND_RGB + (255,))
    return Image.alpha_composite(background, rgba).convert("RGB")


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert a loaded Pillow image of any mode to 8-bit RGB by the module's documented rule."""
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _sixteen_bit_to_l(image).convert("RGB")
    if mode == "F":
        return _float_to_l(image).convert("RGB")
    if mode in _TRANSPARENT_MODES or "transparency" in image.info:
        return _flatten_alpha(image)
    return image.convert("RGB")


def decode_pil(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode a file path or encoded bytes into an upright 8-bit RGB Pillow image.

    Raises:
        ImageError: with `reason` one of `not_found`, `not_a_file`, `unreadable`, `empty`,
            `not_an_image`, `too_many_pixels`, `truncated`, `corrupt`.
    """
    name = _describe(source)
    data = _read_bytes(source)
    image = open_image(data, name, max_pixels)
    image = load_first_frame(image, name)
    try:
        image = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        # NOTE: a malformed EXIF block leaves the image as stored rather than losing it.
        pass
    return to_rgb(image)


def decode_image(source: Source, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode a file path or encoded bytes into an RGB array.

    Returns:
        uint8 array of shape (height, width, 3), values in [0, 255], EXIF orientation applied.
    """
    return np.asarray(decode_pil(source, max_pixels), dtype=np.uint8)


def resize_rgb(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to `size` = (height, width) with Pillow's antialiased bilinear filter."""
    height, width = size
    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.BILINEAR)


def load_image(source: Source, size: tuple[int, int], max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode and resize one image for a model.

    Returns:
        uint8 array of shape (size[0], size[1], 3), values in [0, 255].
    """
    return np.asarray(resize_rgb(decode_pil(source, max_pixels), size), dtype=np.uint8)


def thumbnail_data_uri(path: str, size: int, max_pixels: int = DEFAULT_MAX_PIXELS, quality: int = 85) -> Optional[str]:
    """Decode `path` by the rules above and return a JPEG thumbnail, at most `size` pixels a side,
    as a `data:` URI for a self-contained HTML page; None when the file cannot be decoded."""
    import base64

    try:
        image = decode_pil(path, max_pixels)
    except ImageError:
        return None
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
