"""Robustness tests through the entry points: `imgclf import`, `imgclf check`, and a manifest
read as training input (`scan_dataset` on the manifest, then `split_scan`, then `decode_split`).

`test_robustness.py` decodes, scans and splits each corpus file directly. Here the same files
arrive the way users bring them: listed in an annotation export, audited as a folder, or read
back from a manifest. After the corpus tests of each entry point, files of the same kinds made
in tmp_path (other formats, modes, exports and path tricks) check that the kind is handled,
not only the corpus instance.

"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
from pathlib import Path
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from imgclf.audit import audit_dataset
from imgclf.audit_html import render_html
from imgclf.cli.main import app
from imgclf.importers import ImportOptions, import_annotations
from imgclf.pipeline import decode_split
from imgclf.scan import scan_dataset
from imgclf.splitting import SPLITS, split_scan, write_split
from robustness_corpus import Corpus, copy_into_class, corpus  # noqa: F401  (`corpus` is a fixture)

runner = CliRunner()
RED = (255, 0, 0)
EXIF_ORIENTATION = 0x0112

# Corpus files that every import, scan and audit must accept: (case id, file name).
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
    ("C14", "IMG_0001.JPG"),
    ("C14", "IMG_0002.Jpeg"),
    ("C14", "IMG_0003.PNG"),
]
# Corpus files that must never be imported or trained on, with the reasons a report may give.
# imgclf reports a cut file as truncated or corrupt, depending on the error Pillow raises for it.
BROKEN = [("C02", "cat_0002.jpg", {"truncated", "corrupt"}), ("C12", "empty.jpg", {"empty"})]
# The operating-system metadata files of C11, relative to its folder.
OS_JUNK = [".DS_Store", "cats/.DS_Store", "cats/Thumbs.db", "cats/._img_0.jpg"]


# --------------------------------------------------------------------------------------------
# Helpers: files made in tmp_path, export writers and report readers
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
    """Return a random RGB image. Distinct seeds give distinct files, so no two are duplicates."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _write_noise(path: Path, seed: int, fmt: str = "PNG") -> Path:
    return _write(path, _encode(_noise(seed), fmt))


def _truncated(fmt: str, seed: int = 0) -> bytes:
    """Return the first half of a 64x48 noise image encoded as `fmt`."""
    data = _encode(_noise(seed, (64, 48)), fmt)
    return data[: len(data) // 2]


def _red_bar_pixels() -> np.ndarray:
    """Return light grey pixels, 64 wide and 32 high, with an 8-pixel red bar on the left edge."""
    pixels = np.full((32, 64, 3), 200, np.uint8)
    pixels[:, :8] = RED
    return pixels


def _red_excess(pixels: np.ndarray) -> float:
    """Return the mean of red minus green: about 255 for pure red, 0 for grey or white."""
    pixels = np.asarray(pixels, dtype=np.float64)
    return float((pixels[..., 0] - pixels[..., 1]).mean())


def _write_csv(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label"))
        writer.writerows(rows)
    return path


def _write_cvat(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write a CVAT for images 1.1 export with one tag per image."""
    images = "".join(
        f'<image id="{index}" name={quoteattr(name)} width="0" height="0">'
        f'<tag label={quoteattr(label)} source="manual"/></image>'
        for index, (name, label) in enumerate(rows)
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version>{images}</annotations>',
                    "utf-8")
    return path


def _label_studio_task(task_id: int, url: str, label: str) -> dict:
    result = [{"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": [label]}}]
    return {"id": task_id, "data": {"image": url}, "annotations": [{"id": task_id, "result": result}]}


def _write_label_studio(path: Path, rows: list[tuple[str, str]]) -> Path:
    """Write a Label Studio JSON export. Image URLs are `/data/local-files/?d=<path>` unless a row gives a URL."""
    tasks = []
    for task_id, (name, label) in enumerate(rows, start=1):
        url = name if name.startswith(("/data/", "http")) else "/data/local-files/?d=" + quote(name)
        tasks.append(_label_studio_task(task_id, url, label))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(tasks), "utf-8")
    return path


def _write_voc(path: Path, filename: str, size: tuple[int, int], label: str, box: tuple[int, int, int, int]) -> Path:
    """Write a Pascal VOC file for `filename` of `size` (width, height) with one object."""
    xmin, ymin, xmax, ymax = box
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"<annotation><filename>{filename}</filename>"
        f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
        f"<object><name>{label}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
        f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object></annotation>",
        "utf-8",
    )
    return path


WRITERS = {"csv": _write_csv, "cvat": _write_cvat, "label-studio": _write_label_studio}
EXPORT_FILES = {"csv": "export.csv", "cvat": "annotations.xml", "label-studio": "export.json"}


def _read_report(out: Path) -> dict:
    return json.loads((out / "import_report.json").read_text("utf-8"))


def _manifest_paths(out: Path) -> list[str]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        return [row["path"] for row in csv.DictReader(handle)]


def _reasons(report: dict) -> dict[str, str]:
    """Map the path or URL the export gave for each item not imported to its reason."""
    return {issue["path"]: issue["reason"] for issue in report["not_imported"]}


def _issue(report: dict, relative_path: str) -> dict:
    """Return the not-imported entry whose path or URL ends with `relative_path`."""
    return next(issue for issue in report["not_imported"] if issue["path"].endswith(relative_path))


def _path_of(item) -> str:
    """Return the path of a string, a report entry (dict) or a row, record or issue object."""
    if isinstance(item, str):
        return item
    return item["path"] if isinstance(item, dict) else item.path


def _names(items) -> list[str]:
    return sorted(Path(_path_of(item)).name for item in items)


def _relative(corpus: Corpus, path: Path) -> str:
    return path.relative_to(corpus.root).as_posix()


def _junk_paths(corpus: Corpus) -> list[Path]:
    return [corpus.folder("C11") / name for name in OS_JUNK]


def _corpus_rows(corpus: Corpus) -> list[tuple[str, str]]:
    """List (path relative to the corpus root, case id as label) for every decodable, broken and junk file."""
    paths = [corpus.path(case_id, name) for case_id, name in DECODABLE]
    paths += [corpus.path(case_id, name) for case_id, name, _ in BROKEN]
    paths += _junk_paths(corpus)
    return [(_relative(corpus, path), path.relative_to(corpus.root).parts[0].split("_")[0]) for path in paths]


# --------------------------------------------------------------------------------------------
# `imgclf import` on exports that list the corpus files (C02, C04-C06, C08, C10-C12, C14)
# --------------------------------------------------------------------------------------------

EXPORT_FORMATS = ["csv", "cvat", "label-studio"]


@pytest.fixture(scope="module")
def corpus_imports(corpus: Corpus, tmp_path_factory) -> dict[str, dict]:
    """Import the corpus from each export format; return the report and imported paths by format.

    Imported paths are relative to the corpus root.
    """
    imports = {}
    real_root = corpus.root.resolve()
    for export_format in EXPORT_FORMATS:
        folder = tmp_path_factory.mktemp(f"import_{export_format}")
        source = WRITERS[export_format](folder / EXPORT_FILES[export_format], _corpus_rows(corpus))
        import_annotations(export_format, source, folder / "out", ImportOptions(images_root=corpus.root))
        imported = {Path(os.path.relpath(path, real_root)).as_posix() for path in _manifest_paths(folder / "out")}
        imports[export_format] = {"report": _read_report(folder / "out"), "imported": imported}
    return imports


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize(("case_id", "name"), DECODABLE)
def test_import_corpus_file_is_imported(corpus: Corpus, corpus_imports, export_format, case_id, name):
    assert _relative(corpus, corpus.path(case_id, name)) in corpus_imports[export_format]["imported"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize(("case_id", "name", "reasons"), BROKEN)
def test_import_broken_corpus_file_reports_reason(corpus: Corpus, corpus_imports, export_format, case_id, name, reasons):
    issue = _issue(corpus_imports[export_format]["report"], _relative(corpus, corpus.path(case_id, name)))
    assert issue["reason"] in reasons


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize(("case_id", "name", "reasons"), BROKEN)
def test_import_broken_corpus_file_detail_names_file(corpus: Corpus, corpus_imports, export_format, case_id, name, reasons):
    path = corpus.path(case_id, name)
    issue = _issue(corpus_imports[export_format]["report"], _relative(corpus, path))
    assert str(path.resolve()) in issue["detail"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
def test_import_zero_byte_detail_says_0_bytes(corpus: Corpus, corpus_imports, export_format):
    issue = _issue(corpus_imports[export_format]["report"], _relative(corpus, corpus.path("C12", "empty.jpg")))
    assert "0 bytes" in issue["detail"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize(("case_id", "name", "reasons"), BROKEN)
def test_import_broken_corpus_file_never_imported(corpus: Corpus, corpus_imports, export_format, case_id, name, reasons):
    assert _relative(corpus, corpus.path(case_id, name)) not in corpus_imports[export_format]["imported"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize("junk", OS_JUNK)
def test_import_os_junk_never_imported(corpus: Corpus, corpus_imports, export_format, junk):
    assert f"C11_os_junk/{junk}" not in corpus_imports[export_format]["imported"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
@pytest.mark.parametrize("junk", OS_JUNK)
def test_import_os_junk_reported_not_an_image(corpus_imports, export_format, junk):
    assert _issue(corpus_imports[export_format]["report"], f"C11_os_junk/{junk}")["reason"] == "not_an_image"


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
def test_import_corpus_accounts_for_every_item(corpus: Corpus, corpus_imports, export_format):
    report = corpus_imports[export_format]["report"]
    assert report["n_items"] == len(_corpus_rows(corpus))
    assert report["n_imported"] + report["n_not_imported"] == report["n_items"]


@pytest.mark.parametrize("export_format", EXPORT_FORMATS)
def test_import_corpus_lists_classes_without_images(corpus_imports, export_format):
    # C02, C11 and C12 label only broken or junk files, so none of them may become a class.
    report = corpus_imports[export_format]["report"]
    assert report["classes_without_images"] == ["C02", "C11", "C12"]
    assert "C12" not in report["classes"]


def test_import_copy_writes_only_decodable_corpus_files(corpus: Corpus, tmp_path):
    source = _write_csv(tmp_path / "export.csv", _corpus_rows(corpus))
    import_annotations("csv", source, tmp_path / "out", ImportOptions(images_root=corpus.root, copy_images=True))
    copies = sorted(path.name for path in (tmp_path / "out" / "images").rglob("*") if path.is_file())
    assert copies == sorted(name for _, name in DECODABLE)


def test_import_command_names_truncated_and_empty_files(corpus: Corpus, tmp_path):
    source = _write_csv(tmp_path / "export.csv", _corpus_rows(corpus))
    result = runner.invoke(
        app, ["import", "csv", str(source), "--out", str(tmp_path / "out"), "--images-root", str(corpus.root)],
        env={"COLUMNS": "400"},
    )
    assert result.exit_code == 0, result.output
    assert re.search(r"\(C02_truncated/cat_0002\.jpg\): (truncated|corrupt): ", result.output)
    assert "(C12_zero_byte/cats/empty.jpg): empty: " in result.output
    assert f"{len(DECODABLE)} of {len(_corpus_rows(corpus))} items imported" in result.output


# --------------------------------------------------------------------------------------------
# `imgclf import` on hard files of the same kinds that the corpus does not contain
# --------------------------------------------------------------------------------------------


def test_label_studio_truncated_webp_is_reported(tmp_path):
    _write_noise(tmp_path / "ok.png", 1)
    _write(tmp_path / "half.webp", _truncated("WEBP"))
    source = _write_label_studio(tmp_path / "export.json", [("ok.png", "cat"), ("half.webp", "cat")])
    import_annotations("label-studio", source, tmp_path / "out")
    assert _issue(_read_report(tmp_path / "out"), "half.webp")["reason"] in {"truncated", "corrupt"}


def test_voc_crops_truncated_tiff_is_reported(tmp_path):
    _write(tmp_path / "half.tif", _truncated("TIFF"))
    _write(tmp_path / "ok.png", _encode(_noise(1, (64, 48)), "PNG"))
    _write_voc(tmp_path / "ann" / "half.xml", "half.tif", (64, 48), "cat", (0, 0, 16, 16))
    _write_voc(tmp_path / "ann" / "ok.xml", "ok.png", (64, 48), "cat", (0, 0, 16, 16))
    import_annotations("voc", tmp_path / "ann", tmp_path / "out", ImportOptions(images_root=tmp_path, crops=True))
    assert _issue(_read_report(tmp_path / "out"), "half.tif")["reason"] in {"truncated", "corrupt"}
    assert not list((tmp_path / "out" / "crops").rglob("half*"))


def test_cvat_zero_byte_png_is_reported_empty(tmp_path):
    _write_noise(tmp_path / "images" / "ok.png", 1)
    _write(tmp_path / "images" / "IMG_0007.PNG", b"")
    source = _write_cvat(tmp_path / "annotations.xml", [("ok.png", "cat"), ("IMG_0007.PNG", "cat")])
    import_annotations("cvat", source, tmp_path / "out")
    issue = _issue(_read_report(tmp_path / "out"), "IMG_0007.PNG")
    assert issue["reason"] == "empty"
    assert "0 bytes" in issue["detail"]


def test_voc_crop_of_cmyk_tiff_keeps_red(tmp_path):
    pixels = np.full((32, 32, 3), 200, np.uint8)
    pixels[:8, :8] = RED
    _write(tmp_path / "cmyk.tif", _encode(Image.fromarray(pixels).convert("CMYK"), "TIFF"))
    _write_voc(tmp_path / "ann" / "cmyk.xml", "cmyk.tif", (32, 32), "red", (0, 0, 8, 8))
    result = import_annotations("voc", tmp_path / "ann", tmp_path / "out", ImportOptions(images_root=tmp_path, crops=True))
    with Image.open(result.rows[0].path) as crop:
        assert crop.mode == "RGB"
        assert _red_excess(np.asarray(crop)) > 240


def test_voc_crop_of_transparent_webp_is_white(tmp_path):
    image = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    image.paste((255, 0, 0, 255), (16, 16, 32, 32))
    _write(tmp_path / "logo.webp", _encode(image, "WEBP", lossless=True))
    _write_voc(tmp_path / "ann" / "logo.xml", "logo.webp", (32, 32), "logo", (0, 0, 16, 16))
    result = import_annotations("voc", tmp_path / "ann", tmp_path / "out", ImportOptions(images_root=tmp_path, crops=True))
    with Image.open(result.rows[0].path) as crop:
        assert crop.mode == "RGB"
        assert np.all(np.asarray(crop) == 255)


def test_csv_imports_16bit_png_and_1bit_bmp(tmp_path):
    grey16 = np.array([[0, 1000, 40000, 65535]] * 4, dtype=np.uint16)
    _write(tmp_path / "grey16.png", _encode(Image.fromarray(grey16), "PNG"))
    _write(tmp_path / "mono.bmp", _encode(_noise(2).convert("1"), "BMP"))
    source = _write_csv(tmp_path / "export.csv", [("grey16.png", "scan"), ("mono.bmp", "scan")])
    import_annotations("csv", source, tmp_path / "out")
    assert _names(_manifest_paths(tmp_path / "out")) == ["grey16.png", "mono.bmp"]


def test_voc_crop_follows_exif_orientation(tmp_path):
    # Orientation 8 turns the stored 64x32 image upright as 32x64, with the red bar at the bottom.
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 8
    _write(tmp_path / "turned.png", _encode(Image.fromarray(_red_bar_pixels()), "PNG", exif=exif.tobytes()))
    _write_voc(tmp_path / "ann" / "turned.xml", "turned.png", (32, 64), "bar", (0, 56, 32, 64))
    result = import_annotations("voc", tmp_path / "ann", tmp_path / "out", ImportOptions(images_root=tmp_path, crops=True))
    with Image.open(result.rows[0].path) as crop:
        assert crop.size == (32, 8)
        assert _red_excess(np.asarray(crop)) > 200


def test_cvat_imports_bmp_and_gif(tmp_path):
    _write_noise(tmp_path / "images" / "a.bmp", 1, "BMP")
    _write_noise(tmp_path / "images" / "b.GIF", 2, "GIF")
    source = _write_cvat(tmp_path / "annotations.xml", [("a.bmp", "flowers"), ("b.GIF", "flowers")])
    import_annotations("cvat", source, tmp_path / "out")
    assert _names(_manifest_paths(tmp_path / "out")) == ["a.bmp", "b.GIF"]


def test_label_studio_upload_with_upper_case_extension(tmp_path):
    # Label Studio prefixes uploads with 8 hex digits, and the file here keeps its original name.
    _write_noise(tmp_path / "IMG_0004.JPEG", 1, "JPEG")
    source = _write_label_studio(tmp_path / "export.json", [("/data/upload/3/1a2b3c4d-IMG_0004.JPEG", "phone")])
    import_annotations("label-studio", source, tmp_path / "out")
    assert _names(_manifest_paths(tmp_path / "out")) == ["IMG_0004.JPEG"]


def _appledouble(path: Path) -> Path:
    """Write an AppleDouble file, the metadata macOS writes beside a copied file. It is not an image."""
    return _write(path, b"\x00\x05\x16\x07\x00\x02\x00\x00" + bytes(64))


def test_roboflow_one_hot_ignores_appledouble_file(tmp_path):
    train = tmp_path / "export" / "train"
    _write_noise(train / "a.jpg", 1, "JPEG")
    _write_noise(train / "b.JPG", 2, "JPEG")
    _appledouble(train / "._a.jpg")
    _write(train / "Thumbs.db", b"\xd0\xcf\x11\xe0" + bytes(60))
    (train / "_classes.csv").write_text("filename, cat, dog\na.jpg,1,0\nb.JPG,0,1\n", "utf-8")
    import_annotations("roboflow", tmp_path / "export", tmp_path / "out")
    assert _read_report(tmp_path / "out")["not_imported"] == []


def test_roboflow_one_hot_reports_unlisted_upper_case_jpg(tmp_path):
    train = tmp_path / "export" / "train"
    _write_noise(train / "a.jpg", 1, "JPEG")
    _write_noise(train / "IMG_0009.JPG", 2, "JPEG")
    (train / "_classes.csv").write_text("filename, cat\na.jpg,1\n", "utf-8")
    import_annotations("roboflow", tmp_path / "export", tmp_path / "out")
    assert _reasons(_read_report(tmp_path / "out")) == {"train/IMG_0009.JPG": "not_annotated"}


def test_roboflow_folders_skip_os_junk(tmp_path):
    export = tmp_path / "export"
    _write_noise(export / "train" / "cat" / "a.png", 1)
    _write_noise(export / "valid" / "cat" / "b.png", 2)
    _appledouble(export / "train" / "cat" / "._a.png")
    _write(export / "train" / "cat" / "desktop.ini", b"[.ShellClassInfo]\r\n")
    _appledouble(export / "__MACOSX" / "train" / "cat" / "._a.png")
    _write(export / "train" / ".DS_Store", b"\x00\x00\x00\x01Bud1" + bytes(60))
    result = import_annotations("roboflow", export, tmp_path / "out")
    assert _names(result.rows) == ["a.png", "b.png"]
    assert _read_report(tmp_path / "out")["not_imported"] == []


def test_roboflow_empty_class_folders_listed_without_images(tmp_path):
    train = tmp_path / "export" / "train"
    for index in range(3):
        _write_noise(train / "cats" / f"{index}.png", index)
        _write_noise(train / "dogs" / f"{index}.png", 10 + index)
    (train / "birds").mkdir()
    _write(train / "fish" / "notes.txt", b"to do: add fish photos\n")
    result = import_annotations("roboflow", tmp_path / "export", tmp_path / "out")
    assert result.classes == ["cats", "dogs"]
    assert result.report["classes_without_images"] == ["birds", "fish"]


def test_csv_label_of_broken_files_dropped(tmp_path):
    _write_noise(tmp_path / "cat.png", 1)
    _write(tmp_path / "bird_1.png", _truncated("PNG"))
    _write(tmp_path / "bird_2.jpg", b"")
    source = _write_csv(tmp_path / "export.csv", [("cat.png", "cat"), ("bird_1.png", "bird"), ("bird_2.jpg", "bird")])
    import_annotations("csv", source, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "classes.json").read_text("utf-8")) == ["cat"]
    assert _read_report(tmp_path / "out")["classes_without_images"] == ["bird"]


# In the path-escape tests below, the file outside the images root is not an image, so the
# reason `not_an_image` in place of `outside_root` would show that the importer opened it.


def test_cvat_parent_path_is_outside_root(tmp_path):
    _write_noise(tmp_path / "root" / "images" / "ok.png", 1)
    _write(tmp_path / "secret.png", b"not an image")
    source = _write_cvat(tmp_path / "root" / "annotations.xml", [("ok.png", "cat"), ("../../secret.png", "cat")])
    import_annotations("cvat", source, tmp_path / "out")
    assert _reasons(_read_report(tmp_path / "out")) == {"../../secret.png": "outside_root"}


def test_label_studio_local_file_symlink_is_outside_root(tmp_path):
    _write_noise(tmp_path / "root" / "ok.png", 1)
    _write(tmp_path / "secret.png", b"not an image")
    (tmp_path / "root" / "link.png").symlink_to(tmp_path / "secret.png")
    source = _write_label_studio(tmp_path / "root" / "export.json", [("ok.png", "cat"), ("link.png", "cat")])
    import_annotations("label-studio", source, tmp_path / "out")
    assert _issue(_read_report(tmp_path / "out"), "link.png")["reason"] == "outside_root"


def test_label_studio_encoded_parent_path_is_outside_root(tmp_path):
    _write_noise(tmp_path / "root" / "ok.png", 1)
    _write(tmp_path / "secret.png", b"not an image")
    url = "/data/local-files/?d=sub%2F..%2F..%2Fsecret.png"
    source = _write_label_studio(tmp_path / "root" / "export.json", [("ok.png", "cat"), (url, "cat")])
    import_annotations("label-studio", source, tmp_path / "out")
    assert _reasons(_read_report(tmp_path / "out")) == {url: "outside_root"}


def test_voc_crops_symlinked_folder_is_outside_root(tmp_path):
    _write(tmp_path / "elsewhere" / "secret.png", b"not an image")
    _write(tmp_path / "root" / "ok.png", _encode(_noise(1, (32, 32)), "PNG"))
    (tmp_path / "root" / "shared").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    _write_voc(tmp_path / "root" / "ok.xml", "ok.png", (32, 32), "cat", (0, 0, 8, 8))
    _write_voc(tmp_path / "root" / "secret.xml", "shared/secret.png", (32, 32), "cat", (0, 0, 8, 8))
    import_annotations("voc", tmp_path / "root", tmp_path / "out", ImportOptions(crops=True))
    assert _reasons(_read_report(tmp_path / "out")) == {"shared/secret.png": "outside_root"}


# --------------------------------------------------------------------------------------------
# A manifest as training input: scan_dataset(manifest) -> split_scan -> decode_split
# --------------------------------------------------------------------------------------------

# Two classes of at least three distinct images each, so the default ratios fill every split.
TRAINING_LABELS = {"C01": "formats", "C10": "formats", "C14": "formats",
                   "C04": "modes", "C05": "modes", "C06": "modes", "C08": "modes"}
IMAGE_SIZE = (32, 32)


def _training_rows(corpus: Corpus) -> list[tuple[str, str]]:
    """List every decodable corpus file under its training label, then the broken and junk files under `modes`."""
    rows = [(_relative(corpus, corpus.path(case_id, name)), TRAINING_LABELS[case_id]) for case_id, name in DECODABLE]
    rows += [(_relative(corpus, corpus.path(case_id, name)), "modes") for case_id, name, _ in BROKEN]
    rows += [(_relative(corpus, path), "modes") for path in _junk_paths(corpus)]
    return rows


def _decode_splits(split, cache_dir: Path) -> dict:
    return {name: decode_split(split.rows[name], split.classes, IMAGE_SIZE, cache_dir) for name in SPLITS}


@pytest.fixture(scope="module")
def imported_training(corpus: Corpus, tmp_path_factory) -> dict:
    """Import the corpus from a CSV export, then scan, split and decode the import's manifest."""
    folder = tmp_path_factory.mktemp("imported_training")
    source = _write_csv(folder / "export.csv", _training_rows(corpus))
    import_annotations("csv", source, folder / "out", ImportOptions(images_root=corpus.root))
    scan = scan_dataset(folder / "out", cache_dir=folder / "cache")
    split = split_scan(scan)
    return {"scan": scan, "split": split, "decoded": _decode_splits(split, folder / "cache")}


def test_imported_manifest_scan_finds_every_image(imported_training):
    assert len(imported_training["scan"].records) == len(DECODABLE)


def test_imported_manifest_scan_skips_nothing(imported_training):
    assert imported_training["scan"].skipped == []


def test_imported_manifest_split_keeps_two_classes(imported_training):
    assert imported_training["split"].classes == ["formats", "modes"]


def test_imported_manifest_split_uses_every_image(imported_training):
    assert imported_training["split"].report["images_used"] == len(DECODABLE)


def test_imported_manifest_decodes_every_image(imported_training):
    assert sum(len(decoded) for decoded in imported_training["decoded"].values()) == len(DECODABLE)


def test_imported_manifest_decode_skips_nothing(imported_training):
    assert [issue for decoded in imported_training["decoded"].values() for issue in decoded.skipped] == []


def test_imported_manifest_batches_have_one_shape(imported_training):
    shapes = {decoded.images.shape[1:] for decoded in imported_training["decoded"].values()}
    assert shapes == {(*IMAGE_SIZE, 3)}


@pytest.fixture(scope="module")
def corpus_manifest_scan(corpus: Corpus, tmp_path_factory):
    """Scan a path,label manifest that lists the corpus files directly, broken and junk files included."""
    folder = tmp_path_factory.mktemp("corpus_manifest")
    rows = [(str(corpus.root / path), label) for path, label in _training_rows(corpus)]
    return scan_dataset(_write_csv(folder / "manifest.csv", rows), cache_dir=folder / "cache")


@pytest.mark.parametrize(("case_id", "name", "reasons"), BROKEN)
def test_manifest_scan_skips_broken_corpus_file(corpus: Corpus, corpus_manifest_scan, case_id, name, reasons):
    path = str(corpus.path(case_id, name).resolve())
    [issue] = [issue for issue in corpus_manifest_scan.skipped if issue.path == path]
    assert issue.reason in reasons


@pytest.mark.parametrize("junk", OS_JUNK)
def test_manifest_scan_never_reads_os_junk_as_image(corpus: Corpus, corpus_manifest_scan, junk):
    path = str((corpus.folder("C11") / junk).resolve())
    assert path not in {record.path for record in corpus_manifest_scan.records}


def test_manifest_scan_keeps_every_decodable_file(corpus_manifest_scan):
    assert len(corpus_manifest_scan.records) == len(DECODABLE)


def test_manifest_split_counts_empty_file_as_skipped(corpus_manifest_scan):
    assert split_scan(corpus_manifest_scan).report["skipped_by_reason"]["empty"] == 1


def test_manifest_scan_ignores_appledouble_file(corpus_manifest_scan):
    assert "._img_0.jpg" in _names(issue.path for issue in corpus_manifest_scan.ignored)


def _import_six_images(tmp_path: Path) -> Path:
    """Import a CSV export of three noise PNGs per class into tmp_path/out."""
    rows = []
    for index in range(6):
        label = "cat" if index < 3 else "dog"
        _write_noise(tmp_path / "images" / f"{label}_{index}.png", index)
        rows.append((f"images/{label}_{index}.png", label))
    import_annotations("csv", _write_csv(tmp_path / "export.csv", rows), tmp_path / "out")
    return tmp_path / "out"


def test_manifest_scan_skips_file_truncated_after_import(tmp_path):
    out = _import_six_images(tmp_path)
    _write(tmp_path / "images" / "cat_1.png", _truncated("PNG"))
    scan = scan_dataset(out, cache_dir=tmp_path / "cache")
    assert [(Path(issue.path).name, issue.reason) for issue in scan.skipped] == [("cat_1.png", "truncated")]


def test_decode_split_skips_file_emptied_after_split(tmp_path):
    out = _import_six_images(tmp_path)
    split = split_scan(scan_dataset(out, cache_dir=tmp_path / "cache"))
    (tmp_path / "images" / "dog_4.png").write_bytes(b"")
    skipped = [issue for decoded in _decode_splits(split, tmp_path / "cache").values() for issue in decoded.skipped]
    assert [(Path(issue.path).name, issue.reason) for issue in skipped] == [("dog_4.png", "empty")]


def test_manifest_of_hard_modes_decodes_in_one_shape(tmp_path):
    images = {
        "grey16.png": _encode(Image.fromarray(np.array([[0, 30000, 65535]] * 3, dtype=np.uint16)), "PNG"),
        "cmyk.tif": _encode(_noise(1).convert("CMYK"), "TIFF"),
        "mono.bmp": _encode(_noise(2).convert("1"), "BMP"),
        "grey_alpha.webp": _encode(_noise(3).convert("LA"), "WEBP", lossless=True),
        "palette.gif": _encode(_noise(4).convert("P"), "GIF"),
        "ycbcr.JPEG": _encode(_noise(5), "JPEG"),
        "half.png": _truncated("PNG"),
        "empty.tif": b"",
    }
    rows = [(str(_write(tmp_path / name, data)), "a" if index % 2 else "b") for index, (name, data) in enumerate(images.items())]
    scan = scan_dataset(_write_csv(tmp_path / "manifest.csv", rows), cache_dir=tmp_path / "cache")
    decoded = _decode_splits(split_scan(scan), tmp_path / "cache")
    assert _names(scan.skipped) == ["empty.tif", "half.png"]
    assert sum(len(part) for part in decoded.values()) == 6
    assert {part.images.shape[1:] for part in decoded.values()} == {(*IMAGE_SIZE, 3)}


# --------------------------------------------------------------------------------------------
# `imgclf check` on the corpus folders (C02, C11, C12, C17, C18, C20, C21)
# --------------------------------------------------------------------------------------------

# case id: (images per class, unreadable files, imbalance ratio of the non-empty classes)
AUDITED_FOLDERS = {
    "C11": ({"cats": 2, "dogs": 2}, 0, 1.0),
    "C12": ({"cats": 1}, 1, 1.0),
    "C17": ({"birds": 0, "cats": 3, "dogs": 3, "fish": 0}, 0, 1.0),
    "C18": ({"common": 10, "rare": 1}, 0, 10.0),
    "C20": ({"majority": 40, "minority": 2}, 0, 20.0),
    "C21": ({"cat": 3, "dog": 1}, 0, 3.0),
}


@pytest.fixture(scope="module")
def corpus_audits(corpus: Corpus, tmp_path_factory) -> dict[str, dict]:
    """Audit each folder of AUDITED_FOLDERS, and the corpus root as `root`."""
    cache = tmp_path_factory.mktemp("audit_cache")
    audits = {case_id: audit_dataset(corpus.folder(case_id), cache_dir=cache) for case_id in AUDITED_FOLDERS}
    # At the corpus root every case folder is a class, so the top-level C02 file is inside one.
    audits["root"] = audit_dataset(corpus.root, cache_dir=cache)
    return audits


@pytest.mark.parametrize("case_id", AUDITED_FOLDERS)
def test_audit_corpus_folder_class_counts(corpus_audits, case_id):
    assert corpus_audits[case_id]["classes"] == AUDITED_FOLDERS[case_id][0]


@pytest.mark.parametrize("case_id", AUDITED_FOLDERS)
def test_audit_corpus_folder_unreadable_count(corpus_audits, case_id):
    assert corpus_audits[case_id]["failures"]["unreadable"] == AUDITED_FOLDERS[case_id][1]


@pytest.mark.parametrize("case_id", AUDITED_FOLDERS)
def test_audit_corpus_folder_imbalance_ratio(corpus_audits, case_id):
    assert corpus_audits[case_id]["imbalance_ratio"] == AUDITED_FOLDERS[case_id][2]


def test_audit_zero_byte_detail_says_0_bytes(corpus_audits):
    [issue] = corpus_audits["C12"]["unreadable"]
    assert issue["reason"] == "empty"
    assert "empty.jpg: empty file (0 bytes)" in issue["detail"]


def test_audit_os_junk_is_ignored(corpus_audits):
    assert _names(corpus_audits["C11"]["ignored"]) == [".DS_Store", ".DS_Store", "._img_0.jpg", "Thumbs.db"]


def test_audit_empty_classes_are_birds_and_fish(corpus_audits):
    assert corpus_audits["C17"]["empty_classes"] == ["birds", "fish"]


def test_audit_nested_cats_are_one_exact_group(corpus_audits):
    groups = [group for group in corpus_audits["C21"]["duplicate_groups"] if group["kind"] == "exact"]
    assert [_names(group["paths"]) for group in groups] == [["1.jpg", "2.jpg", "3.jpg"]]


def test_audit_corpus_root_lists_truncated_and_empty(corpus_audits):
    assert _names(corpus_audits["root"]["unreadable"]) == ["cat_0002.jpg", "empty.jpg"]


def test_audit_corpus_root_truncated_reason(corpus_audits):
    [issue] = [issue for issue in corpus_audits["root"]["unreadable"] if issue["path"].endswith("cat_0002.jpg")]
    assert issue["reason"] in {"truncated", "corrupt"}


def test_audit_corpus_root_truncated_class_is_empty(corpus_audits):
    assert corpus_audits["root"]["classes"]["C02_truncated"] == 0


@pytest.mark.parametrize(
    ("case_id", "exit_code"), [("C11", 0), ("C12", 4), ("C17", 0), ("C18", 0), ("C20", 0), ("C21", 0)]
)
def test_check_strict_exit_code_on_corpus_folder(corpus: Corpus, case_id, exit_code):
    result = runner.invoke(app, ["check", str(corpus.folder(case_id)), "--strict"])
    assert result.exit_code == exit_code, result.output


def test_check_strict_zero_byte_names_file(corpus: Corpus):
    result = runner.invoke(app, ["check", str(corpus.folder("C12")), "--strict"])
    assert "1 unreadable files" in result.output
    assert "empty.jpg: empty file (0 bytes)" in result.output
    assert "the audit found 1 unreadable files" in result.output


def test_check_strict_corpus_root_counts_two_unreadable(corpus: Corpus):
    result = runner.invoke(app, ["check", str(corpus.root), "--strict"])
    assert result.exit_code == 4
    assert "2 unreadable files" in result.output


def test_check_truncated_folder_has_no_class_folders(corpus: Corpus):
    # The C02 file lies at the top of its folder, so that folder contains no class folder.
    result = runner.invoke(app, ["check", str(corpus.folder("C02"))])
    assert result.exit_code == 4
    assert "no class folders found" in result.output


def test_check_json_imbalance_ratio_is_20(corpus: Corpus):
    result = runner.invoke(app, ["check", str(corpus.folder("C20")), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["imbalance_ratio"] == 20.0


# --------------------------------------------------------------------------------------------
# `imgclf check --html`: a thumbnail for every corpus image kind
# --------------------------------------------------------------------------------------------

FIGURE = re.compile(r'<figure><img src="data:image/jpeg;base64,([^"]+)" alt=""><figcaption>[^<]*<br>([^<]+)</figcaption>')


@pytest.fixture(scope="module")
def corpus_html(corpus: Corpus, tmp_path_factory) -> dict:
    """Run `imgclf check --html` on every decodable corpus file copied twice, so each is in a duplicate group.

    Returns the CLI result, the page, and the thumbnail bytes by file name.
    """
    folder = tmp_path_factory.mktemp("corpus_html")
    for case_id, name in DECODABLE:
        for prefix in ("", "copy_"):
            copy_into_class(corpus.path(case_id, name), folder / "root", "kinds", f"{prefix}{case_id}_{name}")
    for case_id, name, _ in BROKEN:
        copy_into_class(corpus.path(case_id, name), folder / "root", "broken", f"{case_id}_{name}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE_DIR", str(folder / "cache"))
        result = runner.invoke(app, ["check", str(folder / "root"), "--html", str(folder / "report.html")])
    page = (folder / "report.html").read_text("utf-8") if result.exit_code == 0 else ""
    thumbnails = {name: base64.b64decode(data) for data, name in FIGURE.findall(page)}
    return {"result": result, "page": page, "thumbnails": thumbnails}


def _thumbnail_pixels(corpus_html, name: str) -> np.ndarray:
    with Image.open(io.BytesIO(corpus_html["thumbnails"][name])) as thumbnail:
        return np.asarray(thumbnail.convert("RGB"))


def test_check_html_on_corpus_kinds_exits_0(corpus_html):
    assert corpus_html["result"].exit_code == 0, corpus_html["result"].output


@pytest.mark.parametrize(("case_id", "name"), DECODABLE)
def test_check_html_shows_thumbnail_of_kind(corpus_html, case_id, name):
    assert f"{case_id}_{name}" in corpus_html["thumbnails"]


def test_check_html_has_no_unreadable_thumbnail(corpus_html):
    assert "(unreadable)" not in corpus_html["page"]


@pytest.mark.parametrize(("case_id", "name", "reasons"), BROKEN)
def test_check_html_lists_broken_file_as_skipped(corpus_html, case_id, name, reasons):
    assert re.search(rf"{case_id}_{re.escape(name)}</td><td>({'|'.join(reasons)})</td>", corpus_html["page"])


def test_check_html_rgba_thumbnail_background_is_white(corpus_html):
    assert _thumbnail_pixels(corpus_html, "C05_rgba.png")[0, 0].min() >= 245


def test_check_html_cmyk_thumbnail_block_is_red(corpus_html):
    assert _red_excess(_thumbnail_pixels(corpus_html, "C04_cmyk.jpg")[2:10, 2:14]) > 200


def test_check_html_exif_thumbnail_is_upright(corpus_html):
    pixels = _thumbnail_pixels(corpus_html, "C08_rotated_6.jpg")
    assert pixels.shape[:2] == (64, 32)
    assert _red_excess(pixels[:3]) > 150


def test_render_html_marks_vanished_member_unreadable(tmp_path):
    first = _write_noise(tmp_path / "root" / "cat" / "a.png", 1)
    _write(tmp_path / "root" / "cat" / "copy.png", first.read_bytes())
    _write_noise(tmp_path / "root" / "dog" / "b.png", 2)
    report = audit_dataset(tmp_path / "root", cache_dir=tmp_path / "cache")
    _write(first, first.read_bytes()[:40])
    page = render_html(report)
    assert page.count("(unreadable)") == 1
    assert page.count("data:image/jpeg;base64,") == 1


def test_check_html_thumbnail_under_raised_pixel_limit(tmp_path, monkeypatch):
    # 9,460 x 9,460 is just over the default limit of imgclf and Pillow, 89,478,485 pixels.
    # A higher --max-image-pixels raises Pillow's limit for the whole process, so it is restored.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", Image.MAX_IMAGE_PIXELS)
    data = _encode(Image.new("1", (9460, 9460), 1), "PNG")
    _write(tmp_path / "root" / "plain" / "wall.png", data)
    _write(tmp_path / "root" / "plain" / "wall_copy.png", data)
    html_path = tmp_path / "report.html"
    result = runner.invoke(app, ["check", str(tmp_path / "root"), "--max-image-pixels", "100000000",
                                 "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    assert "(unreadable)" not in html_path.read_text("utf-8")


# --------------------------------------------------------------------------------------------
# `imgclf check` on hard inputs of the same kinds that the corpus does not contain
# --------------------------------------------------------------------------------------------


def test_check_strict_manifest_with_truncated_png_exits_4(tmp_path):
    rows = [(str(_write_noise(tmp_path / f"{index}.png", index)), "ab"[index % 2]) for index in range(4)]
    rows.append((str(_write(tmp_path / "half.png", _truncated("PNG"))), "a"))
    result = runner.invoke(app, ["check", str(_write_csv(tmp_path / "manifest.csv", rows)), "--strict"])
    assert result.exit_code == 4
    assert "the audit found 1 unreadable files" in result.output


def test_audit_split_folder_lists_file_emptied_after_split(tmp_path):
    for index in range(6):
        _write_noise(tmp_path / "root" / "ab"[index % 2] / f"{index}.png", index)
    folder = write_split(split_scan(scan_dataset(tmp_path / "root", cache_dir=tmp_path / "cache")), tmp_path / "split")
    (tmp_path / "root" / "a" / "0.png").write_bytes(b"")
    report = audit_dataset(folder, cache_dir=tmp_path / "cache")
    assert [(Path(issue["path"]).name, issue["reason"]) for issue in report["unreadable"]] == [("0.png", "empty")]


def test_audit_split_root_with_junk_has_no_failures(tmp_path):
    root = tmp_path / "root"
    for index in range(4):
        _write_noise(root / ("train", "val")[index % 2] / "cat" / f"{index}.png", index)
        _write_noise(root / ("train", "val")[index % 2] / "dog" / f"{index}.png", 10 + index)
    _appledouble(root / "train" / "cat" / "._0.png")
    _write(root / "train" / "dog" / "desktop.ini", b"[.ShellClassInfo]\r\n")
    _appledouble(root / "__MACOSX" / "train" / "cat" / "._0.png")
    report = audit_dataset(root, cache_dir=tmp_path / "cache")
    assert report["failures"] == {"leakage": 0, "label_conflicts": 0, "unreadable": 0}
    assert _names(report["ignored"]) == ["._0.png", "._0.png", "desktop.ini"]


def test_audit_split_root_imbalance_per_split(tmp_path):
    root = tmp_path / "root"
    for index in range(12):
        _write_noise(root / ("train" if index < 9 else "test") / "common" / f"{index}.png", index)
    for index in range(3):
        _write_noise(root / ("train" if index < 2 else "test") / "rare" / f"{index}.png", 100 + index)
    report = audit_dataset(root, cache_dir=tmp_path / "cache")
    assert report["imbalance_ratio"] == 4.0
    assert report["split_counts"]["rare"] == {"train": 2, "val": 0, "test": 1}


def test_audit_deeply_nested_files_count_for_top_class(tmp_path):
    _write_noise(tmp_path / "root" / "cat" / "2023" / "summer" / "beach" / "1.png", 1)
    _write_noise(tmp_path / "root" / "cat" / "2024" / "2.PNG", 2)
    _write_noise(tmp_path / "root" / "dog" / "3.png", 3)
    assert audit_dataset(tmp_path / "root", cache_dir=tmp_path / "cache")["classes"] == {"cat": 2, "dog": 1}


def _split_folder_listing(tmp_path: Path, rows: dict[str, list[tuple[str, str]]]) -> Path:
    """Write a split folder with classes a and b whose manifests list `rows` by split name."""
    folder = tmp_path / "split"
    folder.mkdir()
    (folder / "classes.json").write_text('["a", "b"]', "utf-8")
    for name in SPLITS:
        _write_csv(folder / f"{name}.csv", rows.get(name, []))
    return folder


def test_audit_file_in_train_and_test_leaks(tmp_path):
    shared = str(_write_noise(tmp_path / "a.png", 1))
    other = str(_write_noise(tmp_path / "b.png", 2))
    folder = _split_folder_listing(tmp_path, {"train": [(shared, "a"), (other, "b")], "test": [(shared, "a")]})
    report = audit_dataset(folder, cache_dir=tmp_path / "cache")
    assert report["failures"]["leakage"] == 1
    assert sorted(report["leakage"][0]["splits"]) == ["test", "train"]


def test_audit_file_in_two_splits_counted_twice(tmp_path):
    shared = str(_write_noise(tmp_path / "a.png", 1))
    folder = _split_folder_listing(tmp_path, {"train": [(shared, "a")], "val": [(shared, "a")]})
    report = audit_dataset(folder, cache_dir=tmp_path / "cache")
    assert report["split_counts"]["a"] == {"train": 1, "val": 1, "test": 0}


def test_audit_manifest_file_in_two_splits_leaks(tmp_path):
    shared = str(_write_noise(tmp_path / "a.png", 1))
    rows = [(shared, "a", "train"), (str(_write_noise(tmp_path / "b.png", 2)), "b", "train"), (shared, "a", "test")]
    with open(tmp_path / "manifest.csv", "w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows([("path", "label", "split"), *rows])
    assert audit_dataset(tmp_path / "manifest.csv", cache_dir=tmp_path / "cache")["failures"]["leakage"] == 1


def test_audit_exif_rotated_copy_is_near_duplicate(tmp_path):
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    photo = _noise(1, (16, 8)).resize((128, 64), Image.Resampling.BILINEAR)
    _write(tmp_path / "root" / "cat" / "sideways.jpg", _encode(photo, "JPEG", quality=95, exif=exif.tobytes()))
    _write(tmp_path / "root" / "dog" / "upright.jpg", _encode(photo.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95))
    report = audit_dataset(tmp_path / "root", cache_dir=tmp_path / "cache")
    assert report["failures"]["label_conflicts"] == 1
