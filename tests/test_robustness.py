"""Robustness tests: hard input files for decoding, scanning, splitting and prediction.

Each case of the generated corpus (see `robustness_corpus.py`) is one instance of a kind of
fault. A test on the corpus file checks the behaviour the manifest describes, and a second test
on a file of the same kind made here checks that the kind is handled, not only the instance.

Parts of the manifest that these tests do not cover yet, because imgclf has no such feature
or the check needs training:

- REST serving: the HTTP answers for truncated (400), transparent (200), rotated, empty
  (400 "empty upload") and channel-order uploads, concurrent requests (C35), a wrong
  multipart field or content type (C39), and JSON value types (C41). imgclf has no server yet.
- Export: TFLite output parity with Keras on `C34_tflite_parity/parity_224.png` (C34).
- Training and reports: the libjpeg warning counted once in the import report (C01). Pillow
  prints no such warning, which `test_decode_extraneous_bytes_prints_nothing` checks. Class
  weights, per-class recall, macro-F1 and the confusion matrix under imbalance (C20), a model
  trained on red against blue answering through `imgclf predict` (C23), >= 95% validation
  accuracy on a separable set (C27), and the few-images warning with the train/validation gap
  (C31). The cases without files (C26, C28, C29, C30, C32, C33, C36, C37) are training,
  saving and load procedures.
"""

from __future__ import annotations

import io
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgclf.errors import DatasetError, ImageError
from imgclf.imageio import decode_image, load_image, to_rgb
from imgclf.pipeline import decode_split, make_dataset
from imgclf.prediction import Predictor
from imgclf.scan import scan_dataset
from imgclf.splitting import split_scan
from robustness_corpus import Corpus, copy_into_class, corpus  # noqa: F401  (`corpus` is a fixture)

WHITE = (255, 255, 255)
RED = (255, 0, 0)
BLUE = (0, 0, 255)
EXIF_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------------
# Helpers: images made in tmp_path, and models whose output shows what they were fed
# --------------------------------------------------------------------------------------------


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _noise(seed: int, size: tuple[int, int] = (24, 24)) -> Image.Image:
    """A random RGB image; distinct seeds give distinct files, so no two are duplicates."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _write_images(folder: Path, count: int, first_seed: int) -> list[Path]:
    paths = []
    for index in range(count):
        paths.append(_write(folder / f"{index:02d}.png", _encode(_noise(first_seed + index), "PNG")))
    return paths


def _solid(rgb: tuple[int, int, int], size: tuple[int, int] = (16, 16), mode: str = "RGB") -> Image.Image:
    return Image.new("RGB", size, rgb).convert(mode)


def _red_excess(pixels: np.ndarray) -> float:
    """Mean of red minus green over `pixels` (..., 3): about 255 for pure red, 0 for grey."""
    pixels = np.asarray(pixels, dtype=np.float64)
    return float((pixels[..., 0] - pixels[..., 1]).mean())


def _reddest_edge(pixels: np.ndarray, strip: int = 3) -> str:
    edges = {
        "top": pixels[:strip],
        "bottom": pixels[-strip:],
        "left": pixels[:, :strip],
        "right": pixels[:, -strip:],
    }
    return max(edges, key=lambda edge: _red_excess(edges[edge]))


def _red_bar_pixels() -> np.ndarray:
    """64 wide x 32 high, light grey, with a 6-pixel red bar on the left edge."""
    pixels = np.full((32, 64, 3), 200, np.uint8)
    pixels[:, :6] = RED
    return pixels


def _with_orientation(pixels: np.ndarray, fmt: str, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    options = {"lossless": True} if fmt == "WEBP" else {}
    return _encode(Image.fromarray(pixels), fmt, exif=exif.tobytes(), **options)


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _png(width: int, height: int, bit_depth: int, colour_type: int, idat: bytes) -> bytes:
    """A PNG written chunk by chunk, for files Pillow cannot save (16-bit colour, lying headers)."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _png_header_only(width: int, height: int) -> bytes:
    """An 8-bit greyscale PNG whose header claims width x height but whose pixel data is 100 bytes."""
    return _png(width, height, 8, 0, zlib.compress(b"\x00" * 100))


def _png_16bit_rgb(pixels: np.ndarray) -> bytes:
    """A 48-bit RGB PNG from uint16 pixels (H, W, 3)."""
    height, width = pixels.shape[:2]
    rows = b"".join(b"\x00" + pixels[row].astype(">u2").tobytes() for row in range(height))
    return _png(width, height, 16, 2, zlib.compress(rows))


def _probe_predictor(image_size: tuple[int, int], score, classes: list[str]) -> Predictor:
    """A Predictor over a fixed model: resize like imgclf's models, then softmax over `score(pixels)`.

    `score` maps a float32 batch (N, height, width, 3) in [0, 255] to (N, len(classes)) scores,
    so the predicted class shows what the Predictor fed the model.
    """
    import keras

    inputs = keras.Input(shape=(None, None, 3), name="image")
    pixels = keras.layers.Resizing(*image_size, name="resize")(inputs)
    scores = keras.layers.Lambda(score, name="scores")(pixels)
    outputs = keras.layers.Softmax(name="probabilities")(scores)
    return Predictor(keras.Model(inputs, outputs), classes, image_size)


EDGES = ["top", "bottom", "left", "right"]


def _edge_scores(pixels):
    """Red excess in a 4-pixel strip along each edge, in the order of EDGES."""
    from keras import ops

    red = pixels[..., 0] - pixels[..., 1]
    strips = [red[:, :4, :], red[:, -4:, :], red[:, :, :4], red[:, :, -4:]]
    return ops.stack([ops.mean(strip, axis=(1, 2)) for strip in strips], axis=1)


def _colour_scores(pixels):
    from keras import ops

    return ops.stack([ops.mean(pixels[..., 0], axis=(1, 2)), ops.mean(pixels[..., 2], axis=(1, 2))], axis=1)


def _pipeline_pixels(paths: list[Path], image_size: tuple[int, int], cache_dir: Path) -> np.ndarray:
    """Pixels of `paths` as the training pipeline yields them: decode_split, then one tf.data batch."""
    rows = [(str(path), "any") for path in paths]
    decoded = decode_split(rows, ["any"], image_size, cache_dir)
    images, _ = next(iter(make_dataset(decoded, batch_size=len(rows), shuffle=False, seed=0)))
    return images.numpy()


def _stored_mode(path: Path) -> str:
    """The Pillow mode of a file as stored, before any conversion."""
    with Image.open(path) as stored:
        return stored.mode


def _names(issues) -> list[str]:
    return sorted(Path(issue.path).name for issue in issues)


def _label_counts(scan) -> dict[str, int]:
    counts: dict[str, int] = {}
    for record in scan.records:
        counts[record.label] = counts.get(record.label, 0) + 1
    return counts


# --------------------------------------------------------------------------------------------
# The corpus generator made what its manifest describes
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case_id", "name", "key", "value"),
    [
        ("C02", "cat_0002.jpg", "loads", False),
        ("C04", "cmyk.jpg", "mode", "CMYK"),
        ("C05", "rgba.png", "mode", "RGBA"),
        ("C06", "gray_L.jpg", "mode", "L"),
        ("C06", "gray_alpha_LA.png", "mode", "LA"),
        ("C06", "palette_P.png", "mode", "P"),
        ("C08", "rotated_6.jpg", "size_wh", [64, 32]),
        ("C12", "empty.jpg", "bytes", 0),
    ],
)
def test_corpus_file_is_hard_input(corpus: Corpus, case_id, name, key, value):
    assert corpus.pillow_observed(case_id, name)[key] == value


# --------------------------------------------------------------------------------------------
# Extraneous bytes inside a JPEG (C01)
# --------------------------------------------------------------------------------------------


def test_decode_extraneous_bytes_jpeg_keeps_size(corpus: Corpus):
    assert decode_image(corpus.path("C01")).shape == (48, 64, 3)


def test_decode_extraneous_bytes_prints_nothing(corpus: Corpus, capfd):
    decode_image(corpus.path("C01"))
    assert capfd.readouterr().err == ""


def test_scan_accepts_extraneous_bytes_jpeg(corpus: Corpus, tmp_path):
    copy_into_class(corpus.path("C01"), tmp_path, "cats")
    scan = scan_dataset(tmp_path)
    assert len(scan.records) == 1
    assert scan.skipped == []


def test_decode_extraneous_bytes_in_progressive_grey_jpeg(tmp_path):
    data = _encode(_noise(1, (40, 30)).convert("L"), "JPEG", progressive=True)
    junk = bytes(range(1, 151))
    path = _write(tmp_path / "grey.jpg", data[:-2] + junk + data[-2:])
    assert decode_image(path).shape == (30, 40, 3)


# --------------------------------------------------------------------------------------------
# Truncated and corrupt files (C02)
# --------------------------------------------------------------------------------------------


def test_decode_truncated_jpeg_raises_naming_file(corpus: Corpus):
    path = corpus.path("C02")
    with pytest.raises(ImageError, match=re.escape(str(path))) as raised:
        decode_image(path)
    assert raised.value.reason in {"truncated", "corrupt"}


def test_scan_lists_truncated_jpeg_as_skipped(corpus: Corpus, tmp_path):
    broken = copy_into_class(corpus.path("C02"), tmp_path, "cats")
    _write_images(tmp_path / "cats", 2, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.skipped) == ["cat_0002.jpg"]
    assert scan.skipped[0].reason in {"truncated", "corrupt"}
    assert str(broken.resolve()) in scan.skipped[0].detail
    assert len(scan.records) == 2


def test_split_report_counts_truncated_jpeg(corpus: Corpus, tmp_path):
    copy_into_class(corpus.path("C02"), tmp_path, "cats")
    _write_images(tmp_path / "cats", 3, first_seed=0)
    _write_images(tmp_path / "dogs", 3, first_seed=10)
    report = split_scan(scan_dataset(tmp_path)).report
    assert sum(report["skipped_by_reason"].values()) == 1
    assert report["images_used"] == 6


def test_decode_split_skips_truncated_jpeg(corpus: Corpus, tmp_path):
    good = _write(tmp_path / "good.png", _encode(_noise(0), "PNG"))
    rows = [(str(corpus.path("C02")), "cats"), (str(good), "cats")]
    decoded = decode_split(rows, ["cats"], (16, 16), tmp_path / "cache")
    assert decoded.paths == [str(good)]
    assert [issue.reason for issue in decoded.skipped] in (["truncated"], ["corrupt"])


@pytest.mark.parametrize(
    ("fmt", "extension"), [("PNG", "png"), ("TIFF", "tif"), ("BMP", "bmp"), ("WEBP", "webp"), ("GIF", "gif")]
)
def test_decode_half_file_raises_naming_file(tmp_path, fmt, extension):
    data = _encode(_noise(3, (64, 48)), fmt)
    path = _write(tmp_path / f"half.{extension}", data[: len(data) // 2])
    with pytest.raises(ImageError, match=re.escape(str(path))) as raised:
        decode_image(path)
    assert raised.value.reason in {"truncated", "corrupt"}


def test_scan_lists_truncated_png_as_skipped(tmp_path):
    data = _encode(_noise(3, (64, 48)), "PNG")
    _write(tmp_path / "cats" / "half.png", data[: len(data) // 2])
    _write_images(tmp_path / "cats", 1, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.skipped) == ["half.png"]


# --------------------------------------------------------------------------------------------
# CMYK (C04)
# --------------------------------------------------------------------------------------------


def test_decode_cmyk_gives_rgb_shape(corpus: Corpus):
    assert decode_image(corpus.path("C04")).shape == (48, 64, 3)


def test_decode_cmyk_keeps_red_block_red(corpus: Corpus):
    block = decode_image(corpus.path("C04"))[2:10, 2:14].astype(np.float64)
    assert block[..., 0].mean() > 240
    assert block[..., 1].mean() < 20
    assert block[..., 2].mean() < 20


def test_decode_cmyk_tiff_keeps_red_block_red(tmp_path):
    pixels = np.full((32, 32, 3), 200, np.uint8)
    pixels[:8, :8] = RED
    path = _write(tmp_path / "cmyk.tif", _encode(Image.fromarray(pixels).convert("CMYK"), "TIFF"))
    assert _stored_mode(path) == "CMYK"
    assert tuple(decode_image(path)[4, 4]) == RED


# --------------------------------------------------------------------------------------------
# Transparency (C05, and the LA and P files of C06)
# --------------------------------------------------------------------------------------------


def test_decode_rgba_puts_transparent_background_on_white(corpus: Corpus):
    pixels = decode_image(corpus.path("C05"))
    assert pixels.shape == (64, 64, 3)
    assert tuple(pixels[0, 0]) == WHITE
    assert tuple(pixels[63, 63]) == WHITE


def test_decode_rgba_keeps_opaque_red_block(corpus: Corpus):
    assert tuple(decode_image(corpus.path("C05"))[20, 20]) == RED


def test_load_image_rgba_background_is_white(corpus: Corpus):
    pixels = load_image(corpus.path("C05"), (64, 64))
    assert tuple(pixels[0, 0]) == WHITE


def test_decode_half_transparent_red_blends_with_white(tmp_path):
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 128))
    pixels = decode_image(_write(tmp_path / "pink.png", _encode(image, "PNG")))
    assert pixels[0, 0, 0] == 255
    assert abs(int(pixels[0, 0, 1]) - 127) <= 1
    assert abs(int(pixels[0, 0, 2]) - 127) <= 1


@pytest.mark.parametrize("fmt", ["WEBP", "TIFF"])
def test_decode_transparent_rgba_in_other_formats_is_white(fmt):
    image = Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    options = {"lossless": True} if fmt == "WEBP" else {}
    pixels = decode_image(_encode(image, fmt, **options))
    assert tuple(pixels[0, 0]) == WHITE


def test_decode_gif_transparent_index_is_white(tmp_path):
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0, 0, 0] * 254)
    image.paste(1, (0, 0, 4, 8))
    pixels = decode_image(_write(tmp_path / "half.gif", _encode(image, "GIF", transparency=0)))
    assert tuple(pixels[0, 0]) == RED
    assert tuple(pixels[0, 7]) == WHITE


def test_to_rgb_flattens_premultiplied_la():
    transparent = to_rgb(Image.new("La", (2, 2), (100, 0)))
    assert transparent.getpixel((0, 0)) == WHITE


# --------------------------------------------------------------------------------------------
# Grey, grey with alpha, palette (C06) and other single-channel files
# --------------------------------------------------------------------------------------------

C06_FILES = ["gray_L.jpg", "gray_alpha_LA.png", "palette_P.png"]


@pytest.mark.parametrize("name", C06_FILES)
def test_decode_mixed_mode_file_gives_hxwx3(corpus: Corpus, name):
    assert decode_image(corpus.path("C06", name)).shape == (64, 64, 3)


@pytest.mark.parametrize("name", C06_FILES)
def test_decode_mixed_mode_file_gives_uint8(corpus: Corpus, name):
    assert decode_image(corpus.path("C06", name)).dtype == np.uint8


def test_decode_grey_jpeg_replicates_channels(corpus: Corpus):
    pixels = decode_image(corpus.path("C06", "gray_L.jpg"))
    assert np.array_equal(pixels[..., 0], pixels[..., 1])
    assert np.array_equal(pixels[..., 0], pixels[..., 2])


def test_decode_la_transparent_pixels_are_white(corpus: Corpus):
    path = corpus.path("C06", "gray_alpha_LA.png")
    with Image.open(path) as stored:
        transparent = np.asarray(stored.getchannel("A")) == 0
    pixels = decode_image(path)
    assert transparent.any()
    assert np.all(pixels[transparent] == 255)


def test_decode_palette_transparent_index_is_white(corpus: Corpus):
    path = corpus.path("C06", "palette_P.png")
    with Image.open(path) as stored:
        transparent = np.asarray(stored) == stored.info["transparency"]
    pixels = decode_image(path)
    assert transparent.any()
    assert np.all(pixels[transparent] == 255)


def test_pipeline_batches_mixed_modes_in_one_shape(corpus: Corpus, tmp_path):
    paths = [corpus.path("C06", name) for name in C06_FILES]
    assert _pipeline_pixels(paths, (32, 32), tmp_path / "cache").shape == (3, 32, 32, 3)


@pytest.mark.parametrize(
    ("mode", "fmt"), [("1", "BMP"), ("1", "PNG"), ("L", "TIFF"), ("LA", "WEBP"), ("P", "GIF")]
)
def test_decode_single_channel_mode_gives_hxwx3(mode, fmt):
    image = _solid((200, 200, 200), (10, 6), mode)
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert decode_image(_encode(image, fmt, **options)).shape == (6, 10, 3)


# --------------------------------------------------------------------------------------------
# 16-bit and animated files (kinds of C06 beyond the corpus)
# --------------------------------------------------------------------------------------------

SIXTEEN_BIT_VALUES = np.array([[0, 128, 129, 383, 25700, 32767, 32896, 65280, 65535]], dtype=np.uint16)


@pytest.mark.parametrize(("fmt", "extension"), [("PNG", "png"), ("TIFF", "tif")])
def test_decode_16bit_grey_scales_by_257(tmp_path, fmt, extension):
    path = _write(tmp_path / f"grey16.{extension}", _encode(Image.fromarray(SIXTEEN_BIT_VALUES), fmt))
    expected = np.rint(SIXTEEN_BIT_VALUES / 257).astype(np.uint8)
    assert _stored_mode(path).startswith("I;16")
    assert np.array_equal(decode_image(path)[..., 0], expected)


def test_decode_16bit_rgb_within_one_level(tmp_path):
    pixels = np.stack([SIXTEEN_BIT_VALUES] * 3, axis=-1)
    decoded = decode_image(_write(tmp_path / "rgb48.png", _png_16bit_rgb(pixels)))
    expected = np.rint(SIXTEEN_BIT_VALUES / 257)
    assert np.abs(decoded[..., 0].astype(np.int16) - expected).max() <= 1


@pytest.mark.parametrize(
    ("fmt", "extension"), [("GIF", "gif"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif")]
)
def test_decode_animated_file_uses_first_frame(tmp_path, fmt, extension):
    first, second = _solid(RED), _solid(BLUE)
    options = {"lossless": True} if fmt == "WEBP" else {}
    data = _encode(first, fmt, save_all=True, append_images=[second], **options)
    path = _write(tmp_path / f"animated.{extension}", data)
    with Image.open(path) as stored:
        assert getattr(stored, "n_frames", 1) == 2
    assert tuple(decode_image(path)[8, 8]) == RED


# --------------------------------------------------------------------------------------------
# Pixel limit (kind beyond the corpus)
# --------------------------------------------------------------------------------------------


def test_decode_over_pixel_limit_rejected_from_header():
    with pytest.raises(ImageError, match=r"100x100 = 10,000 pixels is over the limit of 9,999") as raised:
        decode_image(_png_header_only(100, 100), max_pixels=9_999)
    assert raised.value.reason == "too_many_pixels"


def test_decode_header_only_png_within_limit_fails_decoding():
    # Under the limit the same bytes fail while decoding, so an over-limit file is rejected before decoding.
    with pytest.raises(ImageError) as raised:
        decode_image(_png_header_only(100, 100), max_pixels=10_000)
    assert raised.value.reason == "truncated"


def test_decode_raised_pixel_limit_overrides_pillow_limit(monkeypatch):
    # 13400 x 13400 is over twice Pillow's default limit, where Pillow rejects files on its own.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    with pytest.raises(ImageError) as raised:
        decode_image(_png_header_only(13_400, 13_400), max_pixels=1_000_000_000)
    assert raised.value.reason == "truncated"


def test_scan_skips_file_over_pixel_limit(tmp_path):
    _write(tmp_path / "cats" / "huge.png", _encode(_noise(0, (120, 100)), "PNG"))
    _write_images(tmp_path / "cats", 1, first_seed=1)
    scan = scan_dataset(tmp_path, max_pixels=10_000)
    assert [issue.reason for issue in scan.skipped] == ["too_many_pixels"]
    assert len(scan.records) == 1


# --------------------------------------------------------------------------------------------
# EXIF orientation (C08)
# --------------------------------------------------------------------------------------------


def test_decode_exif_6_gives_portrait_shape(corpus: Corpus):
    assert decode_image(corpus.path("C08")).shape == (64, 32, 3)


def test_decode_exif_6_puts_red_on_top(corpus: Corpus):
    pixels = decode_image(corpus.path("C08"))
    assert _red_excess(pixels[:3]) > 200
    assert _red_excess(pixels[-3:]) < 20


def test_predictor_exif_6_sees_red_on_top(corpus: Corpus):
    predictor = _probe_predictor((64, 32), _edge_scores, EDGES)
    [prediction] = predictor.predict_files([str(corpus.path("C08"))])
    assert prediction.error is None
    assert prediction.label == "top"


@pytest.mark.parametrize(
    ("fmt", "orientation", "shape", "edge"),
    [
        ("JPEG", 3, (32, 64, 3), "right"),
        ("JPEG", 8, (64, 32, 3), "bottom"),
        ("PNG", 6, (64, 32, 3), "top"),
        ("WEBP", 6, (64, 32, 3), "top"),
        ("TIFF", 8, (64, 32, 3), "bottom"),
    ],
)
def test_decode_exif_orientation_turns_image_upright(fmt, orientation, shape, edge):
    pixels = decode_image(_with_orientation(_red_bar_pixels(), fmt, orientation))
    assert pixels.shape == shape
    assert _reddest_edge(pixels) == edge


@pytest.mark.parametrize(
    ("orientation", "image_size", "edge"),
    [(1, (32, 64), "left"), (3, (32, 64), "right"), (8, (64, 32), "bottom")],
)
def test_predictor_exif_orientation_turns_image_upright(tmp_path, orientation, image_size, edge):
    path = _write(tmp_path / "rotated.jpg", _with_orientation(_red_bar_pixels(), "JPEG", orientation))
    predictor = _probe_predictor(image_size, _edge_scores, EDGES)
    [prediction] = predictor.predict_files([str(path)])
    assert prediction.label == edge


# --------------------------------------------------------------------------------------------
# Formats and extensions (C10, C14)
# --------------------------------------------------------------------------------------------


def test_scan_counts_webp_tiff_and_jpeg(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C10"))
    assert _names(scan.records) == ["a.webp", "b.tif", "c.jpg"]
    assert scan.skipped == []


@pytest.mark.parametrize("name", ["a.webp", "b.tif", "c.jpg"])
def test_decode_webp_tiff_jpeg_keep_size(corpus: Corpus, name):
    assert decode_image(corpus.path("C10", name)).shape == (48, 64, 3)


def test_scan_counts_bmp_gif_lzw_tiff_and_ppm(tmp_path):
    image = _noise(5, (20, 10))
    _write(tmp_path / "flowers" / "a.bmp", _encode(image, "BMP"))
    _write(tmp_path / "flowers" / "b.gif", _encode(image, "GIF"))
    _write(tmp_path / "flowers" / "c.tiff", _encode(image, "TIFF", compression="tiff_lzw"))
    _write(tmp_path / "flowers" / "d.ppm", _encode(image, "PPM"))
    scan = scan_dataset(tmp_path)
    assert _names(scan.records) == ["a.bmp", "b.gif", "c.tiff", "d.ppm"]


def test_scan_counts_upper_case_extensions(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C14"))
    assert _names(scan.records) == ["IMG_0001.JPG", "IMG_0002.Jpeg", "IMG_0003.PNG"]


def test_scan_counts_upper_case_webp_and_tiff(tmp_path):
    _write(tmp_path / "phone" / "A.WEBP", _encode(_noise(1), "WEBP"))
    _write(tmp_path / "phone" / "B.TIFF", _encode(_noise(2), "TIFF"))
    assert len(scan_dataset(tmp_path).records) == 2


def test_scan_skips_broken_upper_case_jpeg(tmp_path):
    _write(tmp_path / "phone" / "BROKEN.JPEG", b"this is not a JPEG")
    _write_images(tmp_path / "phone", 1, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.skipped) == ["BROKEN.JPEG"]
    assert scan.ignored == []


def test_scan_counts_png_bytes_with_txt_extension(tmp_path):
    _write(tmp_path / "cats" / "photo.txt", _encode(_noise(1), "PNG"))
    scan = scan_dataset(tmp_path)
    assert _names(scan.records) == ["photo.txt"]


def test_scan_counts_jpeg_without_extension(tmp_path):
    _write(tmp_path / "cats" / "IMG_0001", _encode(_noise(1), "JPEG"))
    assert _names(scan_dataset(tmp_path).records) == ["IMG_0001"]


def test_scan_ignores_text_file_in_class_folder(tmp_path):
    _write(tmp_path / "cats" / "notes.txt", b"to do: more cats\n")
    _write_images(tmp_path / "cats", 1, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.ignored) == ["notes.txt"]
    assert scan.skipped == []


# --------------------------------------------------------------------------------------------
# Operating-system junk (C11)
# --------------------------------------------------------------------------------------------


def test_scan_os_junk_classes_are_cats_and_dogs(corpus: Corpus):
    assert scan_dataset(corpus.folder("C11")).class_folders == ["cats", "dogs"]


def test_scan_os_junk_counts_four_images(corpus: Corpus):
    assert len(scan_dataset(corpus.folder("C11")).records) == 4


def test_scan_os_junk_files_are_ignored_not_skipped(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C11"))
    assert _names(scan.ignored) == [".DS_Store", ".DS_Store", "._img_0.jpg", "Thumbs.db"]
    assert scan.skipped == []


def test_scan_ignores_junk_in_nested_folders(tmp_path):
    _write_images(tmp_path / "cats" / "indoor", 2, first_seed=0)
    _write(tmp_path / "cats" / "indoor" / "Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60))
    _write(tmp_path / "cats" / "indoor" / "desktop.ini", b"[.ShellClassInfo]\r\n")
    _write(tmp_path / "cats" / "__MACOSX" / "indoor" / "._00.png", bytes(70))
    _write(tmp_path / "cats" / "indoor" / ".thumbnails" / "00.png", _encode(_noise(0, (8, 8)), "PNG"))
    scan = scan_dataset(tmp_path)
    assert len(scan.records) == 2
    assert _names(scan.ignored) == ["._00.png", "00.png", "Thumbs.db", "desktop.ini"]
    assert scan.skipped == []


def test_scan_ignores_empty_placeholder_file(tmp_path):
    _write(tmp_path / "birds" / ".gitkeep", b"")
    _write_images(tmp_path / "cats", 1, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.ignored) == [".gitkeep"]
    assert scan.skipped == []


# --------------------------------------------------------------------------------------------
# Zero-byte files (C12)
# --------------------------------------------------------------------------------------------


def test_scan_skips_zero_byte_jpeg(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C12"))
    assert _names(scan.skipped) == ["empty.jpg"]
    assert scan.skipped[0].reason == "empty"
    assert _names(scan.records) == ["ok.jpg"]


def test_scan_zero_byte_detail_names_file(corpus: Corpus):
    [issue] = scan_dataset(corpus.folder("C12")).skipped
    assert "empty.jpg" in issue.detail
    assert "0 bytes" in issue.detail


def test_decode_zero_byte_file_raises_0_bytes(corpus: Corpus):
    with pytest.raises(ImageError, match=r"empty\.jpg: empty file \(0 bytes\)") as raised:
        decode_image(corpus.path("C12", "empty.jpg"))
    assert raised.value.reason == "empty"


def test_decode_empty_upload_raises_0_bytes():
    with pytest.raises(ImageError, match=r"uploaded image: empty file \(0 bytes\)"):
        decode_image(b"")


def test_scan_skips_nested_zero_byte_png(tmp_path):
    _write(tmp_path / "cats" / "2024" / "IMG_0002.PNG", b"")
    _write_images(tmp_path / "cats", 1, first_seed=0)
    scan = scan_dataset(tmp_path)
    assert _names(scan.skipped) == ["IMG_0002.PNG"]
    assert "0 bytes" in scan.skipped[0].detail


# --------------------------------------------------------------------------------------------
# Classes without images (C17)
# --------------------------------------------------------------------------------------------


def test_split_empty_classes_error_lists_birds_and_fish(corpus: Corpus):
    with pytest.raises(DatasetError, match=r"'birds', 'fish'") as raised:
        split_scan(scan_dataset(corpus.folder("C17")))
    assert "--drop-empty-classes" in str(raised.value)


def test_split_drop_empty_classes_keeps_cats_and_dogs(corpus: Corpus):
    split = split_scan(scan_dataset(corpus.folder("C17")), drop_empty_classes=True)
    assert split.classes == ["cats", "dogs"]
    assert split.report["empty_classes_dropped"] == ["birds", "fish"]


def test_scan_empty_classes_notes_file_is_ignored(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C17"))
    assert _names(scan.ignored) == ["notes.txt"]
    assert scan.class_folders == ["birds", "cats", "dogs", "fish"]


def test_split_junk_only_classes_count_empty(tmp_path):
    _write_images(tmp_path / "cats", 3, first_seed=0)
    _write_images(tmp_path / "dogs", 3, first_seed=10)
    _write(tmp_path / "hamsters" / "only.jpg", b"")
    _write(tmp_path / "mice" / ".DS_Store", b"\x00\x00\x00\x01Bud1")
    with pytest.raises(DatasetError, match=r"'hamsters', 'mice'"):
        split_scan(scan_dataset(tmp_path))


# --------------------------------------------------------------------------------------------
# Classes too small to stratify (C18)
# --------------------------------------------------------------------------------------------


def test_split_singleton_class_error_names_rare_and_minimum(corpus: Corpus):
    with pytest.raises(DatasetError, match=r"'rare' \(1 image\)") as raised:
        split_scan(scan_dataset(corpus.folder("C18")))
    assert "at least 3 distinct images" in str(raised.value)


def test_split_singleton_class_without_test_split_needs_two(corpus: Corpus):
    with pytest.raises(DatasetError, match=r"'rare' \(1 image\).*at least 2 distinct images"):
        split_scan(scan_dataset(corpus.folder("C18")), ratios=(0.8, 0.2, 0.0))


def test_split_two_image_class_error_names_count(tmp_path):
    _write_images(tmp_path / "common", 10, first_seed=0)
    _write_images(tmp_path / "rare", 2, first_seed=20)
    with pytest.raises(DatasetError, match=r"'rare' \(2 images\)"):
        split_scan(scan_dataset(tmp_path))


def test_split_many_small_classes_fill_every_split(tmp_path):
    # Ten classes of three: fewer test images (15% of 30) than classes.
    for index in range(10):
        _write_images(tmp_path / f"class_{index}", 3, first_seed=index * 10)
    counts = split_scan(scan_dataset(tmp_path)).counts()
    assert all(per_split == {"train": 1, "val": 1, "test": 1} for per_split in counts.values())


# --------------------------------------------------------------------------------------------
# Imbalance (C20)
# --------------------------------------------------------------------------------------------


def test_scan_imbalanced_counts_40_and_2(corpus: Corpus):
    assert _label_counts(scan_dataset(corpus.folder("C20"))) == {"majority": 40, "minority": 2}


def test_split_imbalanced_default_ratios_name_minority(corpus: Corpus):
    with pytest.raises(DatasetError, match=r"'minority' \(2 images\)"):
        split_scan(scan_dataset(corpus.folder("C20")))


def test_split_imbalanced_without_test_keeps_every_image(corpus: Corpus):
    counts = split_scan(scan_dataset(corpus.folder("C20")), ratios=(0.8, 0.2, 0.0)).counts()
    assert counts["minority"] == {"train": 1, "val": 1, "test": 0}
    assert sum(counts["majority"].values()) == 40
    assert counts["majority"]["val"] > 0


def test_split_imbalanced_report_gives_ratio_20(corpus: Corpus):
    report = split_scan(scan_dataset(corpus.folder("C20")), ratios=(0.8, 0.2, 0.0)).report
    assert report["class_imbalance_ratio"] == 20.0


# --------------------------------------------------------------------------------------------
# Nested folders (C21)
# --------------------------------------------------------------------------------------------


def test_scan_nested_folders_belong_to_top_level_class(corpus: Corpus):
    scan = scan_dataset(corpus.folder("C21"))
    assert scan.class_folders == ["cat", "dog"]
    assert _label_counts(scan) == {"cat": 3, "dog": 1}


def test_split_nested_folders_train_only_keeps_three_cats(corpus: Corpus):
    split = split_scan(scan_dataset(corpus.folder("C21")), ratios=(1.0, 0.0, 0.0))
    assert split.counts()["cat"] == {"train": 3, "val": 0, "test": 0}
    assert split.classes == ["cat", "dog"]


def test_split_nested_identical_files_error_counts_copies(corpus: Corpus):
    # The three cat files of this case are byte-identical, so they are one distinct image.
    expected = r"'cat' \(1 distinct of 3 images; byte-identical copies count once\)"
    with pytest.raises(DatasetError, match=expected):
        split_scan(scan_dataset(corpus.folder("C21")))


def test_scan_nested_class_name_keeps_top_label(tmp_path):
    _write_images(tmp_path / "cat" / "dog" / "2023" / "summer", 2, first_seed=0)
    _write_images(tmp_path / "dog", 1, first_seed=10)
    scan = scan_dataset(tmp_path)
    assert scan.class_folders == ["cat", "dog"]
    assert _label_counts(scan) == {"cat": 2, "dog": 1}


# --------------------------------------------------------------------------------------------
# Value range and rescaling (C22)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("quadrant", "rows", "columns", "rgb"),
    [
        ("black", slice(0, 32), slice(0, 32), (0, 0, 0)),
        ("white", slice(0, 32), slice(32, 64), WHITE),
        ("grey", slice(32, 64), slice(0, 32), (128, 128, 128)),
        ("red", slice(32, 64), slice(32, 64), RED),
    ],
)
def test_decode_range_canary_quadrant_exact(corpus: Corpus, quadrant, rows, columns, rgb):
    pixels = decode_image(corpus.path("C22", "range_canary.png"))
    assert np.all(pixels[rows, columns] == np.array(rgb, np.uint8)), quadrant


@pytest.mark.parametrize(("row", "column", "expected"), [(8, 8, 0.0), (8, 56, 1.0), (56, 8, 128 / 255)])
def test_model_rescale_maps_canary_to_unit_range(corpus: Corpus, row, column, expected):
    import keras

    from imgclf.models import build_simple_cnn

    model = build_simple_cnn((64, 64), 2)
    rescale = keras.Model(model.inputs, model.get_layer("rescale").output)
    pixels = decode_image(corpus.path("C22", "range_canary.png"))[None].astype(np.float32)
    rescaled = np.asarray(rescale([pixels]))
    assert rescaled[0, row, column] == pytest.approx([expected] * 3, abs=1e-6)


@pytest.mark.parametrize("builder", ["build_simple_cnn", "build_small_cnn"])
def test_model_rescales_pixels_once(builder):
    import keras

    from imgclf import models

    model = getattr(models, builder)((32, 32), 2)
    assert sum(isinstance(layer, keras.layers.Rescaling) for layer in model.layers) == 1


def test_predictor_feeds_model_raw_0_to_255(corpus: Corpus):
    # The probe scores are the mean red and blue values, so a confidence of 1.0 shows that
    # they arrived in [0, 255] rather than already rescaled to [0, 1].
    predictor = _probe_predictor((16, 16), _colour_scores, ["red", "blue"])
    [prediction] = predictor.predict_files([str(corpus.path("C23", "red.png"))])
    assert prediction.confidence == pytest.approx(1.0)


def test_predictor_matches_evaluation_path_on_noise(corpus: Corpus, tmp_path):
    import keras

    from imgclf.models import build_simple_cnn

    keras.utils.set_random_seed(0)
    path = corpus.path("C22", "parity_noise.png")
    predictor = Predictor(build_simple_cnn((32, 32), 2), ["a", "b"], (32, 32))
    [prediction] = predictor.predict_files([str(path)], top_k=2)
    from_files = np.array([dict(prediction.top_k)[name] for name in predictor.classes])
    decoded = decode_split([(str(path), "a")], predictor.classes, (32, 32), tmp_path / "cache")
    from_evaluation = predictor.predict_arrays(decoded.images)[0]
    np.testing.assert_allclose(from_files, from_evaluation, atol=1e-5)


# --------------------------------------------------------------------------------------------
# Channel order (C23)
# --------------------------------------------------------------------------------------------


def test_decode_red_png_channel_0_is_255(corpus: Corpus):
    pixels = decode_image(corpus.path("C23", "red.png"))
    assert np.all(pixels[..., 0] == 255)
    assert np.all(pixels[..., 2] == 0)


def test_load_image_red_png_channel_0_is_255(corpus: Corpus):
    assert np.all(load_image(corpus.path("C23", "red.png"), (16, 16))[..., 0] == 255)


def test_pipeline_red_png_channel_0_is_255(corpus: Corpus, tmp_path):
    pixels = _pipeline_pixels([corpus.path("C23", "red.png")], (16, 16), tmp_path / "cache")
    assert np.all(pixels[..., 0] == 255)
    assert np.all(pixels[..., 2] == 0)


@pytest.mark.parametrize(("name", "label"), [("red.png", "red"), ("blue.png", "blue")])
def test_predictor_reads_channels_in_rgb_order(corpus: Corpus, name, label):
    predictor = _probe_predictor((16, 16), _colour_scores, ["red", "blue"])
    [prediction] = predictor.predict_files([str(corpus.path("C23", name))])
    assert prediction.label == label


@pytest.mark.parametrize("fmt", ["BMP", "TIFF", "WEBP", "PPM"])
def test_decode_red_file_keeps_channel_order(fmt):
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert tuple(decode_image(_encode(_solid(RED), fmt, **options))[0, 0]) == RED


# --------------------------------------------------------------------------------------------
# Small training sets (C27, C31): scanning and splitting only
# --------------------------------------------------------------------------------------------


def test_split_separable_set_is_stratified(corpus: Corpus):
    counts = split_scan(scan_dataset(corpus.folder("C27"))).counts()
    assert counts == {"blue": {"train": 8, "val": 2, "test": 2}, "red": {"train": 8, "val": 2, "test": 2}}


def test_split_tiny_set_fills_every_split(corpus: Corpus):
    counts = split_scan(scan_dataset(corpus.folder("C31"))).counts()
    assert counts == {name: {"train": 3, "val": 1, "test": 1} for name in ("a", "b", "c")}


# --------------------------------------------------------------------------------------------
# The pipeline yields the pixels load_image returns, for every decodable corpus file
# --------------------------------------------------------------------------------------------

DECODABLE = [
    ("C01", "cat_0001.jpg"),
    ("C04", "cmyk.jpg"),
    ("C05", "rgba.png"),
    ("C06", "gray_L.jpg"),
    ("C06", "gray_alpha_LA.png"),
    ("C06", "palette_P.png"),
    ("C08", "rotated_6.jpg"),
    ("C10", "a.webp"),
    ("C10", "b.tif"),
    ("C10", "c.jpg"),
    ("C14", "IMG_0002.Jpeg"),
    ("C22", "range_canary.png"),
    ("C22", "parity_noise.png"),
    ("C23", "red.png"),
]
PIPELINE_SIZE = (24, 40)


@pytest.fixture(scope="module")
def pipeline_batch(corpus: Corpus, tmp_path_factory) -> dict[str, np.ndarray]:
    paths = [corpus.path(case_id, name) for case_id, name in DECODABLE]
    pixels = _pipeline_pixels(paths, PIPELINE_SIZE, tmp_path_factory.mktemp("pipeline_cache"))
    return {name: image for (_, name), image in zip(DECODABLE, pixels)}


@pytest.mark.parametrize(("case_id", "name"), DECODABLE)
def test_pipeline_matches_load_image(corpus: Corpus, pipeline_batch, case_id, name):
    expected = load_image(corpus.path(case_id, name), PIPELINE_SIZE).astype(np.float32)
    np.testing.assert_array_equal(pipeline_batch[name], expected)
