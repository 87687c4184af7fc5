"""Import an annotation export (CSV, CVAT, Label Studio, Roboflow, Pascal VOC) as a dataset folder.

`import_annotations` reads one export and writes three files into an output folder:

- `manifest.csv`: columns `path,label`, plus `split` (train, val or test) for Roboflow
  exports. One row per imported image, with the absolute path of the original file, of its
  copy under `images/<label>/` (`copy_images`), or of its crop under `crops/<label>/` (VOC
  `crops`).
- `classes.json`: the label names sorted by Unicode code point, the class order that
  `imgclf split` and every model use.
- `import_report.json`: the format, the source, counts per class, every item that was
  not imported, each as {item, path, reason, detail}, and `classes_without_images`: labels
  the export names that no imported image has, which `classes.json` therefore leaves out.

Every annotated item ends up either in the manifest or in the report. Reason codes:

- export content: `no_path`, `no_label`, `several_labels`, `mixed_labels`, `no_objects`,
  `invalid_box`, `unsupported_url`, `duplicate`, `label_conflict`, `not_annotated`,
  `outside_class_folder`, `outside_split_folders`;
- image files: `outside_root`, `invalid_path`, `missing`, `not_a_file`, `size_mismatch`,
  and the `ImageError` reasons of `imgclf.imageio` (`empty`, `unreadable`, `not_an_image`,
  `corrupt`, `truncated`, `too_many_pixels`).

Image paths: a relative path resolves against the images root (by default the export
file's folder). An absolute path is accepted only when it lies inside that root. A path
whose `..` parts or symbolic links lead outside the root is reported as `outside_root`,
and the file is never opened. Label names are kept exactly as written, Unicode included,
with leading and trailing whitespace removed. An empty label counts as no label.

The rules of each format are in the docstring of its `_parse_*` function.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import unicodedata
import xml.etree.ElementTree as ElementTree
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Optional, Union
from urllib.parse import parse_qs, unquote, urlsplit
from xml.parsers import expat

from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.errors import DatasetError, ImageError
from imgclf.scan import IMAGE_EXTENSIONS, SPLIT_FOLDER_NAMES, SYSTEM_FOLDERS, is_os_junk, verify_image, walk_files

FORMATS = ("csv", "cvat", "label-studio", "roboflow", "voc")
MANIFEST_FILE = "manifest.csv"
CLASSES_FILE = "classes.json"
REPORT_FILE = "import_report.json"
COPIES_FOLDER = "images"
CROPS_FOLDER = "crops"

ProgressCallback = Callable[[int, int], None]
PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class Box:
    """A VOC bounding box in pixel coordinates. The values are pixel edges, so the width is xmax - xmin."""

    xmin: float
    ymin: float
    xmax: float
    ymax: float


@dataclass(frozen=True)
class Annotation:
    """One labelled item of an export, before its image file is checked.

    `item` locates the item in the export ("labels.csv line 4", "image id 7", "task 12").
    `reference` is the image path or URL as written there. `candidates` are the paths to
    try in order, relative ones against `base`. Only a Label Studio upload has two.
    """

    item: str
    reference: str
    label: str
    base: Path
    candidates: tuple[str, ...]
    split: Optional[str] = None
    box: Optional[Box] = None
    object_number: int = 0
    image_size: Optional[tuple[int, int]] = None


@dataclass(frozen=True)
class ImportIssue:
    """An annotated item or image file that was not imported, with a reason code."""

    item: str
    path: str
    reason: str
    detail: str


@dataclass
class ParsedExport:
    """Annotations and issues read from an export. Every image must resolve inside `root`.

    `labels` are the labels the export names: those of every labelled item, imported or not,
    and Roboflow class folders and `_classes.csv` columns, even where no image has them.
    """

    root: Path
    annotations: list[Annotation] = field(default_factory=list)
    issues: list[ImportIssue] = field(default_factory=list)
    has_splits: bool = False
    labels: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class ManifestRow:
    """One imported image: absolute path, label, and the split the export gave (or None)."""

    path: str
    label: str
    split: Optional[str] = None


@dataclass(frozen=True)
class ImportOptions:
    """Settings of one import. `path_column` and `label_column` left as None take the format's default."""

    images_root: Optional[Path] = None
    copy_images: bool = False
    crops: bool = False
    margin: float = 0.0
    path_column: Optional[str] = None
    label_column: Optional[str] = None
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class ImportResult:
    """The outcome of one import: output folder, ordered classes, manifest rows, issues and report."""

    out: Path
    classes: list[str]
    rows: list[ManifestRow]
    issues: list[ImportIssue]
    report: dict


# ---------------------------------------------------------------------------------------
# Reading export files


def _read_bytes(path: Path, expected: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found; expected {expected}") from None
    except IsADirectoryError:
        raise DatasetError(f"{path}: is a folder; expected {expected}") from None
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror})") from None


def _read_text(path: Path, expected: str) -> str:
    try:
        return _read_bytes(path, expected).decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (invalid byte at offset {exc.start}); expected {expected}") from None


def _read_json(path: Path, expected: str):
    try:
        return json.loads(_read_text(path, expected))
    except json.JSONDecodeError as exc:
        raise DatasetError(
            f"{path}: invalid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); expected {expected}"
        ) from None


class _DoctypeFound(Exception):
    """Signal, raised from an expat handler, that a document declares a DOCTYPE or an entity."""


def _reject_doctype(*_args) -> None:
    raise _DoctypeFound


def _parse_xml(path: Path, expected: str) -> ElementTree.Element:
    """Parse an XML file that contains no DOCTYPE declaration.

    defusedxml is not a dependency of imgclf, so entity expansion attacks ("billion laughs",
    external entities) are blocked here instead. A first expat pass rejects any DOCTYPE
    before ElementTree parses the file. Without a DOCTYPE a document can declare no entity,
    so only the five predefined ones (`&amp;`, `&lt;`, ...) remain.
    """
    data = _read_bytes(path, expected)
    checker = expat.ParserCreate()
    checker.StartDoctypeDeclHandler = _reject_doctype
    checker.EntityDeclHandler = _reject_doctype
    try:
        checker.Parse(data, True)
    except _DoctypeFound:
        raise DatasetError(
            f"{path}: contains a DOCTYPE declaration, which imgclf rejects to block entity expansion; "
            f"expected {expected} without one"
        ) from None
    except expat.ExpatError as exc:
        raise DatasetError(f"{path}: invalid XML ({exc}); expected {expected}") from None
    try:
        return ElementTree.fromstring(data)
    except ElementTree.ParseError as exc:
        raise DatasetError(f"{path}: invalid XML ({exc}); expected {expected}") from None


def _text(element: ElementTree.Element, tag: str) -> str:
    return (element.findtext(tag) or "").strip()


def _source_path(source: Path, path: Path) -> str:
    """Return `path` relative to the export folder (for a single export file, its folder), or whole outside it."""
    base = source if source.is_dir() else source.parent
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------------------
# CSV


def _parse_csv(source: Path, options: ImportOptions) -> ParsedExport:
    """Read any comma-separated file with a header row.

    The image path is read from `options.path_column` (default `path`) and the label in
    `options.label_column` (default `label`). Relative paths resolve against the images
    root, by default the CSV file's folder. Other columns are ignored.
    """
    path_column = options.path_column or "path"
    label_column = options.label_column or "label"
    expected = f"a comma-separated file with a header row naming columns {path_column!r} and {label_column!r}"
    reader = csv.DictReader(io.StringIO(_read_text(source, expected), newline=""))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise DatasetError(f"{source}, line 1: invalid CSV ({exc}); expected {expected}") from None
    if fieldnames is None:
        raise DatasetError(f"{source}: empty file; expected {expected}")
    reader.fieldnames = [name.strip() for name in fieldnames]
    _check_csv_columns(source, reader.fieldnames, (path_column, label_column))

    root = options.images_root or source.parent
    parsed = ParsedExport(root=root)
    try:
        for row in reader:
            item = f"{source.name} line {reader.line_num}"
            reference = (row.get(path_column) or "").strip()
            label = (row.get(label_column) or "").strip()
            _add_labelled(parsed, item, reference, [label] if label else [], root, "several_labels")
    except csv.Error as exc:
        raise DatasetError(f"{source}, after line {reader.line_num}: invalid CSV ({exc}); expected {expected}") from None
    return parsed


def _check_csv_columns(source: Path, found: list[str], required: tuple[str, str]) -> None:
    missing = [name for name in required if name not in found]
    if not missing:
        return
    hint = "pass --path-column and --label-column with the names of the image path and label columns"
    if len(found) == 1 and any(separator in found[0] for separator in ";\t|"):
        hint = "the file must be comma-separated, but its header looks separated by another character"
    raise DatasetError(
        f"{source}: missing column(s) {', '.join(repr(name) for name in missing)} "
        f"(found {', '.join(repr(name) for name in found) or 'none'}); {hint}"
    )


def _add_labelled(
    parsed: ParsedExport,
    item: str,
    reference: str,
    labels: list[str],
    base: Path,
    several_reason: str,
    candidates: Optional[tuple[str, ...]] = None,
    **extra,
) -> None:
    """Add one item as an annotation when it has a path and exactly one distinct label, else as an issue."""
    distinct = sorted(set(labels))
    parsed.labels.update(distinct)
    if not reference:
        parsed.issues.append(ImportIssue(item, "", "no_path", "no image path"))
    elif not distinct:
        parsed.issues.append(ImportIssue(item, reference, "no_label", "no label"))
    elif len(distinct) > 1:
        names = ", ".join(repr(label) for label in distinct)
        parsed.issues.append(ImportIssue(item, reference, several_reason, f"labelled {names}; expected one label"))
    else:
        parsed.annotations.append(
            Annotation(item, reference, distinct[0], base, candidates or (reference,), **extra)
        )


# ---------------------------------------------------------------------------------------
# CVAT


def _parse_cvat(source: Path, options: ImportOptions) -> ParsedExport:
    """Read a CVAT "for images 1.1" XML export.

    Each `<image name=...>` is one item and its `<tag label=...>` elements are its labels.
    Tags repeating one label count once. An image without tags is reported as `no_label`,
    and one with tags of two or more labels as `several_labels`. Shapes (boxes, polygons)
    are ignored. `name` resolves against the images root. By default that root is the
    `images` folder beside the XML file when one exists, as in a CVAT export with images,
    and the XML file's folder otherwise.
    """
    expected = "a CVAT for images 1.1 export (annotations.xml)"
    document = _parse_xml(source, expected)
    if document.tag != "annotations":
        raise DatasetError(f"{source}: the root element is <{document.tag}>; expected {expected} with <annotations>")
    images = document.findall("image")
    if not images and document.findall("track"):
        raise DatasetError(
            f"{source}: a CVAT video export (<track> elements); export the task as 'CVAT for images 1.1'"
        )

    root = options.images_root or _default_cvat_root(source)
    parsed = ParsedExport(root=root)
    for element in images:
        item = f"image id {element.get('id', '?')}"
        labels = [label for tag in element.findall("tag") if (label := (tag.get("label") or "").strip())]
        _add_labelled(parsed, item, (element.get("name") or "").strip(), labels, root, "several_labels")
    return parsed


def _default_cvat_root(source: Path) -> Path:
    images = source.parent / "images"
    return images if images.is_dir() else source.parent


# ---------------------------------------------------------------------------------------
# Label Studio

LABEL_STUDIO_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-(?=.)")
# Keys of a JSON-MIN row that describe the annotation, never the label.
LABEL_STUDIO_MIN_METADATA = {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time"}


def _parse_label_studio(source: Path, options: ImportOptions) -> ParsedExport:
    """Read a Label Studio JSON or JSON-MIN export.

    An export whose tasks all have a `data` object is JSON; one where none has it is
    JSON-MIN. The image URL is `data.image` (JSON) or `image` (JSON-MIN), or the key named
    by `options.path_column`. Labels come from the `choices` results of every annotation
    that was not cancelled. Predictions are ignored. Annotators who agree give one label,
    and different labels are reported as `several_labels`. The JSON-MIN choice field is
    described in `_find_choice_field`, and URL mapping in `_label_studio_candidates`.
    """
    expected = "a Label Studio JSON or JSON-MIN export (a JSON list of tasks)"
    tasks = _read_json(source, expected)
    if not isinstance(tasks, list):
        raise DatasetError(f"{source}: the top level is a JSON {type(tasks).__name__}; expected {expected}")
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise DatasetError(f"{source}: item {index} is a JSON {type(task).__name__}; expected {expected} of objects")

    has_data = [isinstance(task.get("data"), dict) for task in tasks]
    if any(has_data) and not all(has_data):
        raise DatasetError(
            f"{source}: {has_data.count(True)} tasks have a 'data' object (JSON export) and "
            f"{has_data.count(False)} do not (JSON-MIN export); expected one export format"
        )
    root = options.images_root or source.parent
    parsed = ParsedExport(root=root)
    path_key = options.path_column or "image"
    if all(has_data):
        for index, task in enumerate(tasks):
            url = task["data"].get(path_key)
            _add_label_studio_task(parsed, _task_item(task, index), url, _task_choices(task), root, f"data.{path_key}")
    else:
        choice_field = _choice_field(source, tasks, path_key, options.label_column)
        for index, row in enumerate(tasks):
            labels = _choice_labels(row.get(choice_field)) if choice_field else []
            _add_label_studio_task(parsed, _task_item(row, index), row.get(path_key), labels, root, path_key)
    return parsed


def _task_item(task: dict, index: int) -> str:
    return f"task {task['id']}" if "id" in task else f"item {index}"


def _task_choices(task: dict) -> list[str]:
    """Collect the choices of every `choices` result of the task's annotations that were not cancelled."""
    labels: list[str] = []
    annotations = task.get("annotations")
    for annotation in annotations if isinstance(annotations, list) else []:
        if not isinstance(annotation, dict) or annotation.get("was_cancelled"):
            continue
        results = annotation.get("result")
        for result in results if isinstance(results, list) else []:
            if isinstance(result, dict) and result.get("type") == "choices":
                labels.extend(_choice_labels(result.get("value")))
    return labels


def _choice_labels(value) -> list[str]:
    """Turn a choice value, a string or {"choices": [...]}, into trimmed non-empty labels."""
    if isinstance(value, str):
        choices = [value]
    elif isinstance(value, dict) and isinstance(value.get("choices"), list):
        choices = value["choices"]
    else:
        return []
    return [label for choice in choices if isinstance(choice, str) and (label := choice.strip())]


def _is_choice_value(value) -> bool:
    if isinstance(value, str):
        return True
    return isinstance(value, dict) and isinstance(value.get("choices"), list)


def _choice_field(source: Path, rows: list[dict], path_key: str, label_column: Optional[str]) -> Optional[str]:
    if label_column is None:
        return _find_choice_field(source, rows, path_key)
    if rows and not any(label_column in row for row in rows):
        keys = sorted({key for row in rows for key in row})
        raise DatasetError(
            f"--label-column {label_column!r}: no row of {source} has this field "
            f"(found {', '.join(repr(key) for key in keys)})"
        )
    return label_column


def _find_choice_field(source: Path, rows: list[dict], path_key: str) -> Optional[str]:
    """Find the JSON-MIN field that contains the label.

    Candidates are the keys other than the image key and the annotation metadata (`id`,
    `annotator`, `annotation_id`, `created_at`, `updated_at`, `lead_time`) whose value is a
    string or {"choices": [...]} in every row that has the key. Exactly one candidate is the
    choice field. With none, no row has a label. With several, the caller must name one,
    because JSON-MIN also flattens the task's own data fields into each row.
    """
    seen: set[str] = set()
    rejected: set[str] = set()
    for row in rows:
        for key, value in row.items():
            if key == path_key or key in LABEL_STUDIO_MIN_METADATA:
                continue
            (seen if _is_choice_value(value) else rejected).add(key)
    candidates = sorted(seen - rejected)
    if len(candidates) > 1:
        raise DatasetError(
            f"{source}: several fields could contain the label ({', '.join(repr(key) for key in candidates)}); "
            "pass --label-column with the name of the choice field"
        )
    return candidates[0] if candidates else None


def _add_label_studio_task(
    parsed: ParsedExport, item: str, url, labels: list[str], root: Path, path_key: str
) -> None:
    if not isinstance(url, str) or not url.strip():
        parsed.issues.append(ImportIssue(item, "", "no_path", f"no image URL in {path_key!r}"))
        return
    url = url.strip()
    candidates = _label_studio_candidates(url)
    if isinstance(candidates, str):
        parsed.issues.append(ImportIssue(item, url, "unsupported_url", candidates))
        return
    _add_labelled(parsed, item, url, labels, root, "several_labels", candidates)


def _label_studio_candidates(url: str) -> Union[tuple[str, ...], str]:
    """Map a Label Studio image URL to paths under the images root, or return why it cannot be mapped.

    With or without a scheme and host:
    - `/data/upload/<project>/<name>` maps to `<name>` directly inside the images root,
      not in a per-project sub-folder. When no such file exists and the name starts with
      the 8-hex-digit prefix that Label Studio adds on upload (`1a2b3c4d-photo.jpg`), it
      maps to the name without it (`photo.jpg`).
    - `/data/local-files/?d=<path>` maps to `<path>`, which is relative to Label Studio's
      local-files document root, so that folder is the one to pass as the images root.
    - A URL without a scheme is a path relative to the images root.
    Other URLs (http, s3, gs, ...) are not mapped, because imgclf never downloads files.
    """
    parts = urlsplit(url)
    path = unquote(parts.path)
    if path.startswith("/data/local-files"):
        values = parse_qs(parts.query).get("d")
        if not values or not values[0].strip():
            return "a /data/local-files/ URL without a d= parameter"
        return (values[0].strip(),)
    if path.startswith("/data/upload/"):
        name = PurePosixPath(path).name
        original = LABEL_STUDIO_UPLOAD_PREFIX.sub("", name)
        return (name, original) if original != name else (name,)
    # A one-letter scheme is a Windows drive letter (C:\...), not a URL.
    if len(parts.scheme) > 1 or parts.netloc:
        return ("only /data/upload/ and /data/local-files/ URLs and plain paths are mapped to files; "
                "download the images and export with paths relative to one folder")
    return (url,)


# ---------------------------------------------------------------------------------------
# Roboflow

ROBOFLOW_CLASSES_CSV = "_classes.csv"


def _parse_roboflow(source: Path, options: ImportOptions) -> ParsedExport:
    """Read a Roboflow classification export folder.

    The export contains split folders `train/`, `valid/` and `test/` (`val/` and `validation/`
    are read too, and `valid` becomes `val`). Each split folder either contains
    `_classes.csv`, the one-hot layout, or one sub-folder per class, the folder layout.
    Images outside the split folders are reported as `outside_split_folders`. The images
    root is the export folder, so `--images-root` is not used.
    """
    if not source.is_dir():
        raise DatasetError(f"{source}: not a folder; expected a Roboflow export folder with train/, valid/, test/")
    parsed = ParsedExport(root=source, has_splits=True)
    split_folders: dict[str, Path] = {}
    for child in sorted(source.iterdir()):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower()) if child.is_dir() else None
        if split is None:
            _report_stray_images(parsed, source, child, "outside_split_folders", "not inside train/, valid/ or test/")
        elif split in split_folders:
            raise DatasetError(
                f"{source}: both {split_folders[split].name}/ and {child.name}/ look like the {split} split; "
                "keep one of them"
            )
        else:
            split_folders[split] = child
    if not split_folders:
        raise DatasetError(f"{source}: no train/, valid/ or test/ folder; expected a Roboflow classification export")

    for split, folder in split_folders.items():
        if (folder / ROBOFLOW_CLASSES_CSV).is_file():
            _parse_roboflow_one_hot(parsed, source, folder, split)
        else:
            _parse_roboflow_folders(parsed, source, folder, split)
    return parsed


def _is_hidden_or_system(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower() in SYSTEM_FOLDERS


def _report_stray_images(parsed: ParsedExport, source: Path, path: Path, reason: str, detail: str) -> None:
    """Report each file with an image extension at or under `path`.

    Other files (README.roboflow.txt, data.yaml) are not annotations, so they are left out
    without a report entry.
    """
    if _is_hidden_or_system(path):
        return
    files = walk_files(path, []) if path.is_dir() else [path]
    for file in files:
        if file.suffix.lower() in IMAGE_EXTENSIONS:
            relative = _source_path(source, file)
            parsed.issues.append(ImportIssue(relative, relative, reason, detail))


def _parse_roboflow_folders(parsed: ParsedExport, source: Path, folder: Path, split: str) -> None:
    for child in sorted(folder.iterdir()):
        if not child.is_dir():
            _report_stray_images(parsed, source, child, "outside_class_folder", "not inside a class folder")
            continue
        if _is_hidden_or_system(child):
            continue
        label = child.name.strip()
        if label:
            parsed.labels.add(label)
        for file in walk_files(child, []):
            relative = _source_path(source, file)
            _add_labelled(parsed, relative, relative, [label] if label else [], source, "several_labels", split=split)


def _parse_roboflow_one_hot(parsed: ParsedExport, source: Path, folder: Path, split: str) -> None:
    """Read `_classes.csv`: `filename, <class>, <class>, ...` with a 0 or 1 per class.

    A row with no 1 is `no_label` and one with several is `several_labels`: the label is
    never guessed. Images in the split folder that the file does not list are reported as
    `not_annotated`.
    """
    csv_path = folder / ROBOFLOW_CLASSES_CSV
    csv_name = _source_path(source, csv_path)
    expected = "a Roboflow _classes.csv with a header 'filename, <class>, <class>, ...' and 0 or 1 per class"
    try:
        rows = list(csv.reader(io.StringIO(_read_text(csv_path, expected), newline="")))
    except csv.Error as exc:
        raise DatasetError(f"{csv_path}: invalid CSV ({exc}); expected {expected}") from None
    if not rows or len(rows[0]) < 2 or not rows[0][0].strip():
        raise DatasetError(f"{csv_path}: missing header; expected {expected}")
    classes = [name.strip() for name in rows[0][1:]]
    if not all(classes):
        raise DatasetError(f"{csv_path}: the header has an empty class name; expected {expected}")
    parsed.labels.update(classes)

    listed: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        labels = _one_hot_labels(csv_path, line, row, classes, expected)
        filename = row[0].strip()
        listed.add(filename)
        reference = f"{folder.name}/{filename}" if filename else ""
        _add_labelled(parsed, f"{csv_name} line {line}", reference, labels, source, "several_labels", split=split)

    for file in sorted(folder.iterdir()):
        # Operating-system metadata, such as an AppleDouble `._photo.jpg`, is not an unlisted image.
        if is_os_junk(file.name):
            continue
        if file.is_file() and file.suffix.lower() in IMAGE_EXTENSIONS and file.name not in listed:
            relative = _source_path(source, file)
            parsed.issues.append(ImportIssue(relative, relative, "not_annotated", f"not listed in {csv_name}"))


def _one_hot_labels(csv_path: Path, line: int, row: list[str], classes: list[str], expected: str) -> list[str]:
    if len(row) != len(classes) + 1:
        raise DatasetError(
            f"{csv_path}, line {line}: {len(row)} fields, but the header has {len(classes) + 1}; expected {expected}"
        )
    labels: list[str] = []
    for name, cell in zip(classes, row[1:]):
        value = cell.strip()
        if value not in ("0", "1", ""):
            raise DatasetError(f"{csv_path}, line {line}: column {name!r} contains {value!r}; expected 0 or 1")
        if value == "1":
            labels.append(name)
    return labels


# ---------------------------------------------------------------------------------------
# Pascal VOC


def _parse_voc(source: Path, options: ImportOptions) -> ParsedExport:
    """Read Pascal VOC XML files, as LabelImg writes them: one file, or every .xml under a folder.

    `<filename>` resolves against `--images-root`, by default the XML file's own folder.
    `<path>` is ignored because it names a file on the annotator's machine. With
    `options.crops` every `<object>` is one item: its `<name>` is the label and its
    `<bndbox>` the crop. Without it every file is one item: an image whose objects all share
    one class takes that class, one without objects is `no_objects`, and one with several
    classes is `mixed_labels`.
    """
    if source.is_dir():
        files = [path for path in walk_files(source, []) if path.suffix.lower() == ".xml"]
        root = options.images_root or source
    else:
        files = [source]
        root = options.images_root or source.parent
    if not files:
        raise DatasetError(f"{source}: no .xml file found; expected Pascal VOC annotation files")

    parsed = ParsedExport(root=root)
    for xml_file in files:
        document = _parse_xml(xml_file, "a Pascal VOC annotation file")
        if document.tag != "annotation":
            raise DatasetError(
                f"{xml_file}: the root element is <{document.tag}>; expected a Pascal VOC file with <annotation>"
            )
        item = _source_path(source, xml_file)
        base = options.images_root or xml_file.parent
        if options.crops:
            _add_voc_objects(parsed, item, document, base)
        else:
            _add_voc_image(parsed, item, document, base)
    return parsed


def _voc_image_size(document: ElementTree.Element) -> Optional[tuple[int, int]]:
    """Return (width, height) from `<size>`, or None where it is absent or 0 (unknown to LabelImg)."""
    try:
        width = int(float(_text(document, "size/width")))
        height = int(float(_text(document, "size/height")))
    except ValueError:
        return None
    return (width, height) if width > 0 and height > 0 else None


def _add_voc_image(parsed: ParsedExport, item: str, document: ElementTree.Element, base: Path) -> None:
    filename = _text(document, "filename")
    names = [_text(element, "name") for element in document.findall("object")]
    if not names:
        parsed.issues.append(ImportIssue(item, filename, "no_objects", "no <object> element"))
    elif not all(names):
        unnamed = [str(number) for number, name in enumerate(names, start=1) if not name]
        parsed.issues.append(ImportIssue(item, filename, "no_label", f"<object> {', '.join(unnamed)} has no <name>"))
    else:
        _add_labelled(parsed, item, filename, names, base, "mixed_labels")


def _add_voc_objects(parsed: ParsedExport, item: str, document: ElementTree.Element, base: Path) -> None:
    filename = _text(document, "filename")
    objects = document.findall("object")
    if not objects:
        parsed.issues.append(ImportIssue(item, filename, "no_objects", "no <object> element"))
    size = _voc_image_size(document)
    for number, element in enumerate(objects, start=1):
        object_item = f"{item} object {number}"
        name = _text(element, "name")
        box = _voc_box(element)
        # A missing filename or name is reported (by _add_labelled) in preference to the box.
        if filename and name and isinstance(box, str):
            parsed.labels.add(name)
            parsed.issues.append(ImportIssue(object_item, filename, "invalid_box", box))
            continue
        _add_labelled(parsed, object_item, filename, [name] if name else [], base, "several_labels",
                      box=box, object_number=number, image_size=size)


def _voc_box(element: ElementTree.Element) -> Union[Box, str]:
    """Read `<bndbox>`, or return why it is invalid."""
    texts = [_text(element, f"bndbox/{name}") for name in ("xmin", "ymin", "xmax", "ymax")]
    try:
        values = [float(text) for text in texts]
    except ValueError:
        return f"<bndbox> values {texts} are not all numbers"
    if not all(math.isfinite(value) for value in values):
        return f"<bndbox> values {texts} are not all finite"
    box = Box(*values)
    if box.xmax <= box.xmin or box.ymax <= box.ymin:
        return f"empty <bndbox> ({texts[0]}, {texts[1]}) to ({texts[2]}, {texts[3]}); expected xmin < xmax and ymin < ymax"
    return box


PARSERS = {
    "csv": _parse_csv,
    "cvat": _parse_cvat,
    "label-studio": _parse_label_studio,
    "roboflow": _parse_roboflow,
    "voc": _parse_voc,
}


# ---------------------------------------------------------------------------------------
# Resolving and checking image files


def _is_inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def _resolve_reference(reference: str, base: Path, root: str, real_root: str) -> Union[str, ImportIssue]:
    """Return the real path of one reference inside the root, or the issue that stops it.

    The lexical check catches `..` parts and absolute paths, and the real-path check
    catches symbolic links, so no file outside the root is ever opened.
    """
    try:
        candidate = os.path.join(os.path.abspath(base), reference)
        if not _is_inside(os.path.normpath(candidate), root):
            return ImportIssue("", reference, "outside_root",
                               f"the path leads outside the images root {root}; pass --images-root with a folder "
                               "that contains the images")
        real = os.path.realpath(candidate)
        if not _is_inside(real, real_root):
            return ImportIssue("", reference, "outside_root",
                               f"a symbolic link leads to {real}, outside the images root {root}")
        if not os.path.exists(real):
            return ImportIssue("", reference, "missing", f"file not found: {candidate}")
        if not os.path.isfile(real):
            return ImportIssue("", reference, "not_a_file", f"not a regular file: {candidate}")
    except ValueError as exc:
        # os.path raises ValueError for a path with a NUL character.
        return ImportIssue("", reference, "invalid_path", f"invalid path ({exc})")
    return real


def _resolve(annotation: Annotation, root: str, real_root: str) -> Union[str, ImportIssue]:
    """Resolve the first candidate that exists. A failure other than `missing` is reported at once."""
    missing: list[str] = []
    for reference in annotation.candidates:
        outcome = _resolve_reference(reference, annotation.base, root, real_root)
        if isinstance(outcome, str):
            return outcome
        if outcome.reason != "missing":
            return ImportIssue(annotation.item, annotation.reference, outcome.reason, outcome.detail)
        missing.append(outcome.detail.removeprefix("file not found: "))
    detail = f"file not found: {' or '.join(missing)}"
    return ImportIssue(annotation.item, annotation.reference, "missing", detail)


def _verify_files(
    paths: list[str], max_pixels: int, progress: Optional[ProgressCallback]
) -> dict[str, Optional[ImageError]]:
    """Decode every file once and return each path's ImageError, or None for a usable image."""

    def check(path: str) -> Optional[ImageError]:
        try:
            verify_image(path, "", max_pixels)
        except ImageError as error:
            return error
        return None

    outcomes: dict[str, Optional[ImageError]] = {}
    workers = max(1, min(16, (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for done, (path, error) in enumerate(zip(paths, pool.map(check, paths)), start=1):
            outcomes[path] = error
            if progress is not None:
                progress(done, len(paths))
    return outcomes


def _check_images(
    parsed: ParsedExport, options: ImportOptions, progress: Optional[ProgressCallback]
) -> list[tuple[Annotation, str]]:
    """Resolve and decode every annotation's image and return the usable (annotation, real path) pairs.

    Failures and duplicates are appended to `parsed.issues`.
    """
    root = os.path.abspath(parsed.root)
    real_root = os.path.realpath(root)
    resolved: list[tuple[Annotation, str]] = []
    for annotation in parsed.annotations:
        outcome = _resolve(annotation, root, real_root)
        if isinstance(outcome, ImportIssue):
            parsed.issues.append(outcome)
        else:
            resolved.append((annotation, outcome))

    errors = _verify_files(sorted({path for _, path in resolved}), options.max_pixels, progress)
    usable: list[tuple[Annotation, str]] = []
    for annotation, path in resolved:
        error = errors[path]
        if error is None:
            usable.append((annotation, path))
        else:
            parsed.issues.append(ImportIssue(annotation.item, annotation.reference, error.reason, str(error)))
    return _drop_duplicates(usable, parsed.issues)


def _drop_duplicates(
    usable: list[tuple[Annotation, str]], issues: list[ImportIssue]
) -> list[tuple[Annotation, str]]:
    """Keep the first annotation of each image (or VOC object); report repeats and label conflicts.

    An image annotated twice with one label is kept once, and the repeats are `duplicate`.
    An image annotated with different labels is left out entirely, every occurrence being
    `label_conflict`, because which label is right cannot be decided here.
    """
    groups: dict[tuple, list[tuple[Annotation, str]]] = defaultdict(list)
    for annotation, path in usable:
        groups[(path, annotation.box)].append((annotation, path))

    kept: list[tuple[Annotation, str]] = []
    for members in groups.values():
        first = members[0][0]
        labels = sorted({annotation.label for annotation, _ in members})
        if len(labels) > 1:
            names = ", ".join(repr(label) for label in labels)
            items = ", ".join(annotation.item for annotation, _ in members)
            for annotation, _ in members:
                issues.append(ImportIssue(annotation.item, annotation.reference, "label_conflict",
                                          f"the same image is labelled {names} ({items})"))
            continue
        kept.append(members[0])
        for annotation, _ in members[1:]:
            issues.append(ImportIssue(annotation.item, annotation.reference, "duplicate",
                                      f"the same image is already imported as {first.item}"))
    return kept


# ---------------------------------------------------------------------------------------
# Writing the dataset folder


FORBIDDEN_IN_FOLDER_NAMES = set('/\\<>:"|?*')


def class_folder_names(classes: list[str]) -> dict[str, str]:
    """Map each label to a name that can be used as one folder name.

    Path separators, the characters Windows forbids (`<>:"|?*`) and control characters
    become `_`. A leading `.` (a hidden folder, which `imgclf split` skips) becomes `_`,
    and names are cut to 200 UTF-8 bytes. Labels that would share a folder, also when
    compared case-insensitively as on macOS and Windows, get `-2`, `-3`, ... in class order.
    """
    names: dict[str, str] = {}
    used: set[str] = set()
    for label in classes:
        base = "".join("_" if char in FORBIDDEN_IN_FOLDER_NAMES or unicodedata.category(char) == "Cc" else char
                       for char in label)
        if base.startswith("."):
            base = "_" + base[1:]
        while len(base.encode("utf-8")) > 200:
            base = base[:-1]
        name, suffix = base, 2
        while name.casefold() in used:
            name, suffix = f"{base}-{suffix}", suffix + 1
        used.add(name.casefold())
        names[label] = name
    return names


def _unique_file(folder: Path, name: str, taken: set[str]) -> Path:
    stem, suffix = os.path.splitext(name)
    candidate, number = name, 2
    while candidate.casefold() in taken:
        candidate, number = f"{stem}-{number}{suffix}", number + 1
    taken.add(candidate.casefold())
    return folder / candidate


def crop_bounds(box: Box, margin: float, width: int, height: int) -> Optional[tuple[int, int, int, int]]:
    """Return the crop (left, top, right, bottom) in pixels, or None where nothing of it is inside the image.

    The box grows by `margin` times its width on the left and right and times its height
    at the top and bottom, is rounded outwards to whole pixels, then clipped to the image.

    NOTE: the Pascal VOC devkit numbers pixels from 1, so a box written by that convention
    gives a crop shifted by up to one pixel to the right and down.
    """
    dx = (box.xmax - box.xmin) * margin
    dy = (box.ymax - box.ymin) * margin
    # Clipping before rounding keeps a huge margin (an infinite edge) from overflowing int().
    left = math.floor(max(0.0, box.xmin - dx))
    top = math.floor(max(0.0, box.ymin - dy))
    right = math.ceil(min(float(width), box.xmax + dx))
    bottom = math.ceil(min(float(height), box.ymax + dy))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def _write_copies(usable: list[tuple[Annotation, str]], out: Path, folders: dict[str, str]) -> list[ManifestRow]:
    rows: list[ManifestRow] = []
    taken: dict[str, set[str]] = defaultdict(set)
    for annotation, path in sorted(usable, key=lambda pair: pair[1]):
        folder = out / COPIES_FOLDER / folders[annotation.label]
        target = _unique_file(folder, os.path.basename(path), taken[annotation.label])
        folder.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(path, target)
        except OSError as exc:
            raise DatasetError(f"{target}: cannot write the copy of {path} ({exc.strerror})") from None
        rows.append(ManifestRow(str(target), annotation.label, annotation.split))
    return rows


def _write_crops(
    usable: list[tuple[Annotation, str]], out: Path, folders: dict[str, str], options: ImportOptions,
    issues: list[ImportIssue],
) -> list[ManifestRow]:
    """Write each object's crop as PNG and return the manifest rows.

    Objects whose box or image size does not fit the decoded image are appended to `issues`.
    """
    from imgclf.imageio import decode_pil

    by_image: dict[str, list[Annotation]] = defaultdict(list)
    for annotation, path in usable:
        by_image[path].append(annotation)
    rows: list[ManifestRow] = []
    taken: dict[str, set[str]] = defaultdict(set)
    for path in sorted(by_image):
        try:
            image = decode_pil(path, options.max_pixels)
        except ImageError as error:
            issues.extend(ImportIssue(a.item, a.reference, error.reason, str(error)) for a in by_image[path])
            continue
        for annotation in by_image[path]:
            bounds = _crop_or_issue(annotation, image.size, options.margin, issues)
            if bounds is None:
                continue
            folder = out / CROPS_FOLDER / folders[annotation.label]
            name = f"{Path(path).stem}_{annotation.object_number}.png"
            target = _unique_file(folder, name, taken[annotation.label])
            folder.mkdir(parents=True, exist_ok=True)
            try:
                image.crop(bounds).save(target, "PNG")
            except OSError as exc:
                raise DatasetError(f"{target}: cannot write the crop ({exc})") from None
            rows.append(ManifestRow(str(target), annotation.label, annotation.split))
    return rows


def _crop_or_issue(
    annotation: Annotation, size: tuple[int, int], margin: float, issues: list[ImportIssue]
) -> Optional[tuple[int, int, int, int]]:
    width, height = size
    if annotation.image_size is not None and annotation.image_size != size:
        expected_width, expected_height = annotation.image_size
        issues.append(ImportIssue(
            annotation.item, annotation.reference, "size_mismatch",
            f"the annotation gives the image size {expected_width}x{expected_height}, but the image decodes to "
            f"{width}x{height} (EXIF orientation applied), so the box would land in the wrong place",
        ))
        return None
    bounds = crop_bounds(annotation.box, margin, width, height)
    if bounds is None:
        box = annotation.box
        issues.append(ImportIssue(
            annotation.item, annotation.reference, "invalid_box",
            f"the box ({box.xmin:g}, {box.ymin:g}) to ({box.xmax:g}, {box.ymax:g}) lies outside the "
            f"{width}x{height} image",
        ))
    return bounds


def _write_manifest(rows: list[ManifestRow], path: Path, with_split: bool) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(("path", "label", "split") if with_split else ("path", "label"))
        for row in rows:
            writer.writerow((row.path, row.label, row.split) if with_split else (row.path, row.label))


def _write_json(path: Path, value) -> None:
    path.write_text(json.dumps(value, ensure_ascii=False, indent=2) + "\n", "utf-8")


def _similar_class_names(classes: list[str]) -> list[list[str]]:
    """Group labels that differ only in letter case or Unicode normalization (NFC versus NFD)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for label in classes:
        groups[unicodedata.normalize("NFC", label).casefold()].append(label)
    return [names for names in groups.values() if len(names) > 1]


def _build_report(
    export_format: str, source: Path, parsed: ParsedExport, options: ImportOptions,
    classes: list[str], rows: list[ManifestRow], folders: dict[str, str],
) -> dict:
    report = {
        "format": export_format,
        "source": str(source.resolve()),
        "images_root": str(Path(parsed.root).resolve()),
        "copy_images": options.copy_images,
        "crops": options.crops,
        "margin": options.margin,
        "classes": classes,
        "counts": {label: count for label, count in sorted(Counter(row.label for row in rows).items())},
    }
    if parsed.has_splits:
        per_split = {label: {"train": 0, "val": 0, "test": 0} for label in classes}
        for row in rows:
            per_split[row.label][row.split] += 1
        report["counts_by_split"] = per_split
    report.update({
        "n_items": len(rows) + len(parsed.issues),
        "n_imported": len(rows),
        "n_not_imported": len(parsed.issues),
        "not_imported_by_reason": dict(sorted(Counter(issue.reason for issue in parsed.issues).items())),
        "not_imported": [asdict(issue) for issue in parsed.issues],
        "class_folders": folders,
        "similar_class_names": _similar_class_names(classes),
        "classes_without_images": sorted(parsed.labels - set(classes)),
    })
    return report


# ---------------------------------------------------------------------------------------
# Entry point


def _check_options(export_format: str, source: Path, out: Path, options: ImportOptions) -> None:
    if export_format not in PARSERS:
        raise DatasetError(f"format {export_format!r} is not supported; choose one of {', '.join(FORMATS)}")
    if not source.exists():
        raise DatasetError(f"{source}: export not found")
    if options.crops and export_format != "voc":
        raise DatasetError(f"--crops applies only to the voc format, not to {export_format}")
    if options.crops and options.copy_images:
        raise DatasetError("--copy and --crops cannot be combined: crops are always written under OUT/crops")
    if not math.isfinite(options.margin) or options.margin < 0:
        raise DatasetError(f"--margin {options.margin}: expected a fraction of the box size of 0 or more, such as 0.1")
    if options.margin and not options.crops:
        raise DatasetError(f"--margin {options.margin} applies only with --crops")
    for flag, value, formats in (("--path-column", options.path_column, ("csv", "label-studio")),
                                 ("--label-column", options.label_column, ("csv", "label-studio"))):
        if value is not None and export_format not in formats:
            raise DatasetError(f"{flag} applies only to the {' and '.join(formats)} formats, not to {export_format}")
    if options.images_root is not None and export_format == "roboflow":
        raise DatasetError("--images-root is not used with roboflow: the images sit in the export's split folders")
    if options.images_root is not None and not options.images_root.is_dir():
        raise DatasetError(f"--images-root {options.images_root}: folder not found")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetError(f"--out {out}: already exists and is not an empty folder; choose a new folder")


def import_annotations(
    export_format: str,
    source: PathLike,
    out: PathLike,
    options: ImportOptions = ImportOptions(),
    progress: Optional[ProgressCallback] = None,
) -> ImportResult:
    """Read an annotation export and write manifest.csv, classes.json and import_report.json into `out`.

    Args:
        export_format: one of `FORMATS`: "csv", "cvat", "label-studio", "roboflow", "voc".
        source: the export file, or the export folder for roboflow (and for voc, a folder
            of XML files).
        out: a new or empty folder.
        options: images root, copy or crop settings and column names; see `ImportOptions`.
        progress: called with (images checked, images to check) while images are decoded.

    Raises:
        DatasetError: for an unknown format, invalid options, a missing or unparseable
            export, an `out` that is not empty, or an export from which no image was
            imported. In the last case the three files are written first.
    """
    source, out = Path(source), Path(out)
    _check_options(export_format, source, out, options)
    parsed = PARSERS[export_format](source, options)
    usable = _check_images(parsed, options, progress)

    classes = sorted({annotation.label for annotation, _ in usable})
    out.mkdir(parents=True, exist_ok=True)
    folders = class_folder_names(classes) if options.copy_images or options.crops else {}
    if options.crops:
        rows = _write_crops(usable, out, folders, options, parsed.issues)
        classes = sorted({row.label for row in rows})
    elif options.copy_images:
        rows = _write_copies(usable, out, folders)
    else:
        rows = [ManifestRow(path, annotation.label, annotation.split) for annotation, path in usable]
    rows.sort(key=lambda row: (row.path, row.label))

    _write_manifest(rows, out / MANIFEST_FILE, parsed.has_splits)
    _write_json(out / CLASSES_FILE, classes)
    report = _build_report(export_format, source, parsed, options, classes, rows, folders)
    _write_json(out / REPORT_FILE, report)
    if not rows:
        reasons = ", ".join(f"{count} {reason}" for reason, count in report["not_imported_by_reason"].items())
        raise DatasetError(
            f"{source}: no image imported ({reasons or 'the export has no items'}); "
            f"each item and its reason is listed in {out / REPORT_FILE}"
        )
    return ImportResult(out, classes, rows, parsed.issues, report)
