"""Find and verify the images under a dataset root.

Each top-level folder of the root is a class; files in nested folders belong to their
top-level class. Files are recognised as images by content, whatever their extension or
its letter case. Every file under the root ends up in exactly one of three lists:
`records` (usable images), `skipped` (image-like files that cannot be used, with a
reason) or `ignored` (operating-system junk and non-image files, with a reason).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Optional

from PIL import Image, ImageOps

from imgclf.errors import DatasetError, ImageError
from imgclf.cache import ScanCache
from imgclf.constants import DEFAULT_MAX_PIXELS
from imgclf.imageio import load_first_frame, open_image

# Extensions that make an unreadable file count as a broken image rather than a non-image.
IMAGE_EXTENSIONS = {
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".tif", ".tiff", ".bmp",
    ".dib", ".gif", ".ppm", ".pgm", ".pbm", ".pnm", ".ico", ".tga", ".heic", ".heif", ".avif",
}
OS_JUNK_NAMES = {".ds_store", "thumbs.db", "ehthumbs.db", "desktop.ini", ".directory", "icon\r", ".localized"}
SYSTEM_FOLDERS = {"__macosx", ".git", ".svn", ".ipynb_checkpoints", "@eadir", ".trash", ".trashes"}
SPLIT_FOLDER_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class ImageRecord:
    """One verified image: absolute path, class label, content hash and size in pixels."""

    path: str
    label: str
    sha256: str
    width: int
    height: int
    # 64-bit DCT perceptual hash (imagehash.phash) as 16 hex digits; near-identical images differ in few bits.
    phash: str = ""


@dataclass(frozen=True)
class FileIssue:
    """A file that is not used, with a machine-readable reason and a sentence for people."""

    path: str
    reason: str
    detail: str


@dataclass
class ScanResult:
    """Everything found under a dataset root; `records` are sorted by path."""

    root: str
    records: list[ImageRecord] = field(default_factory=list)
    skipped: list[FileIssue] = field(default_factory=list)
    ignored: list[FileIssue] = field(default_factory=list)
    class_folders: list[str] = field(default_factory=list)
    # Set for a root that already holds train/val/test folders: record path -> split name.
    split_of: dict[str, str] = field(default_factory=dict)
    # Set for a manifest with a split column: each record's split, in record order. A path
    # listed under two splits gives two records, which `split_of` cannot tell apart.
    record_splits: list[str] = field(default_factory=list)

    @property
    def n_files(self) -> int:
        return len(self.records) + len(self.skipped) + len(self.ignored)


def is_os_junk(name: str) -> bool:
    """Tell whether a file name is operating-system metadata rather than user data."""
    lowered = name.lower()
    return lowered in OS_JUNK_NAMES or name.startswith("._")


def verify_image(path: str, label: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageRecord:
    """Read, hash and fully decode one file.

    Raises:
        ImageError: when the file is not a usable image; `reason` names the cause.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{path}: cannot be read ({exc.strerror})", reason="unreadable") from None
    if not data:
        raise ImageError(f"{path}: empty file (0 bytes)", reason="empty")
    image = open_image(data, path, max_pixels)
    load_first_frame(image, path)
    width, height = image.size
    try:
        # Hash the upright pixels, so a photo stored sideways with an EXIF tag matches an upright copy.
        upright = ImageOps.exif_transpose(image)
    except (OSError, ValueError, SyntaxError, KeyError, TypeError):
        upright = image
    return ImageRecord(path, label, hashlib.sha256(data).hexdigest(), width, height, perceptual_hash(upright))


def perceptual_hash(image: Image.Image) -> str:
    """The 64-bit DCT perceptual hash of a loaded image, as 16 hex digits."""
    import imagehash

    try:
        return str(imagehash.phash(image))
    except (ValueError, OSError):
        # Modes that imagehash cannot turn into grey directly go through the RGB rule first.
        from imgclf.imageio import to_rgb

        return str(imagehash.phash(to_rgb(image)))


def walk_files(folder: Path, ignored: list[FileIssue]) -> list[Path]:
    """List regular files under `folder`, sorted; junk and system folders go to `ignored`."""
    found: list[Path] = []
    for current, dirs, files in os.walk(folder, followlinks=False):
        # Hidden folders are skipped at every depth, as they are at the top level of a dataset root.
        system = [d for d in dirs if d.lower() in SYSTEM_FOLDERS or d.startswith(".")]
        for name in system:
            for sub, _, sub_files in os.walk(Path(current) / name):
                for file_name in sub_files:
                    ignored.append(
                        FileIssue(str(Path(sub) / file_name), "os_junk", f"inside hidden or system folder {name}")
                    )
        for name in sorted(d for d in dirs if d not in system and os.path.islink(os.path.join(current, d))):
            ignored.append(FileIssue(str(Path(current) / name), "symlinked_folder",
                                     "symbolic link to a folder inside a class folder, not followed (it could loop); "
                                     "link the files instead, or make it a class folder of its own"))
        dirs[:] = sorted(d for d in dirs if d not in system)
        for name in sorted(files):
            path = Path(current) / name
            if is_os_junk(name):
                ignored.append(FileIssue(str(path), "os_junk", "operating-system metadata file"))
                continue
            problem = _not_regular(path)
            if problem:
                ignored.append(FileIssue(str(path), "not_a_regular_file", problem))
            else:
                found.append(path)
    return found


def _not_regular(path: Path) -> Optional[str]:
    """Why `path` cannot be read as an ordinary file (a FIFO would block a reader forever), or None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "broken symbolic link" if os.path.islink(path) else "cannot be opened"
    if stat.S_ISREG(mode):
        return None
    kind = "named pipe (FIFO)" if stat.S_ISFIFO(mode) else "socket" if stat.S_ISSOCK(mode) else "device or special file"
    return f"{kind}, not a regular file"


def _classify_failure(path: str, error: ImageError) -> tuple[str, FileIssue]:
    """Sort an unreadable file into 'ignored' (not an image at all) or 'skipped' (a broken image)."""
    extension = os.path.splitext(path)[1].lower()
    if error.reason == "not_an_image" and extension not in IMAGE_EXTENSIONS:
        return "ignored", FileIssue(path, "not_an_image", "not an image file")
    if error.reason == "empty" and extension not in IMAGE_EXTENSIONS:
        # An empty placeholder such as .gitkeep is not a broken image.
        return "ignored", FileIssue(path, "empty", "empty file (0 bytes) without an image extension")
    return "skipped", FileIssue(path, error.reason, str(error))


def _verify_one(path: str, label: str, max_pixels: int, cache: Optional[ScanCache]):
    """Verify one file, or take its result from `cache`; returns an ImageRecord or an ImageError."""
    cached = cache.get(path) if cache is not None else None
    if cached is not None and cached.get("max_pixels") == max_pixels:
        if "error" in cached:
            return ImageError(cached["error"], reason=cached["reason"])
        return ImageRecord(path, label, cached["sha256"], cached["width"], cached["height"], cached["phash"])
    try:
        record = verify_image(path, label, max_pixels)
    except ImageError as error:
        if cache is not None:
            cache.put(path, {"max_pixels": max_pixels, "error": str(error), "reason": error.reason})
        return error
    if cache is not None:
        cache.put(path, {"max_pixels": max_pixels, "sha256": record.sha256, "width": record.width,
                         "height": record.height, "phash": record.phash})
    return record


def verify_files(
    candidates: list[tuple[str, str]],
    max_pixels: int,
    progress: Optional[ProgressCallback],
    result: ScanResult,
    cache_dir: Optional[str | os.PathLike] = None,
) -> None:
    """Verify (path, label) candidates on all cores into `result.records`, `skipped` and `ignored`.

    Results are cached by path, size and modification time, so a second scan of an
    unchanged folder reads no image.
    """
    cache = ScanCache(result.root, cache_dir)
    workers = max(1, min(16, (os.cpu_count() or 1) * 2))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        outcomes = pool.map(lambda item: _verify_one(item[0], item[1], max_pixels, cache), candidates)
        for done, ((path, _), outcome) in enumerate(zip(candidates, outcomes), start=1):
            if isinstance(outcome, ImageRecord):
                result.records.append(outcome)
            else:
                where, issue = _classify_failure(path, outcome)
                getattr(result, where).append(issue)
            if progress is not None:
                progress(done, len(candidates))
    cache.save()


def find_split_folders(root: Path) -> dict[str, Path]:
    """Map split names ('train', 'val', 'test') to folders when `root` is already split.

    A root counts as split when it contains a `train` folder, at least one of `val`,
    `valid`, `validation` or `test` (any letter case), and no other visible folder.
    Returns an empty dict otherwise.
    """
    folders: dict[str, Path] = {}
    for child in sorted(root.iterdir()):
        split = SPLIT_FOLDER_NAMES.get(child.name.lower())
        if child.is_dir() and split is not None:
            if split in folders:
                raise DatasetError(
                    f"{root}: both {folders[split].name}/ and {child.name}/ look like the {split} split; "
                    "keep one of them"
                )
            folders[split] = child
    others = [child.name for child in root.iterdir() if child.is_dir() and child.name.lower() not in SPLIT_FOLDER_NAMES
              and not child.name.startswith(".") and child.name.lower() not in SYSTEM_FOLDERS]
    if "train" in folders and len(folders) > 1 and not others:
        return folders
    # Folders such as car/, test/ and train/ side by side are classes that happen to share split names.
    return {}


def _looks_like_image(path: Path) -> bool:
    """Tell from the extension or the header whether a stray file is an image."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with Image.open(path):
            return True
    except Image.DecompressionBombError:
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def _collect_class_files(
    base: Path, ignored: list[FileIssue], skipped: list[FileIssue]
) -> tuple[list[tuple[str, str]], list[str]]:
    """Return (path, label) candidates under `base` and the class folder names, sorted."""
    candidates: list[tuple[str, str]] = []
    classes: list[str] = []
    for child in sorted(base.iterdir()):
        if child.is_dir():
            if child.name.lower() in SYSTEM_FOLDERS or child.name.startswith("."):
                for path in walk_files(child, ignored):
                    ignored.append(FileIssue(str(path), "os_junk", f"inside hidden or system folder {child.name}"))
                continue
            classes.append(child.name)
            # abspath, not resolve(): a linked file keeps the name it has in the dataset.
            candidates.extend((os.path.abspath(path), child.name) for path in walk_files(child, ignored))
        elif child.is_file():
            if is_os_junk(child.name):
                ignored.append(FileIssue(str(child), "os_junk", "operating-system metadata file"))
            elif _looks_like_image(child):
                skipped.append(
                    FileIssue(str(child), "outside_class_folder", "image at the top level, not inside a class folder")
                )
            else:
                ignored.append(FileIssue(str(child), "not_an_image", "not an image file"))
    return candidates, classes


MANIFEST_FILE = "manifest.csv"


def manifest_path(source: str | os.PathLike) -> Optional[Path]:
    """The manifest CSV that `source` names: the file itself, or `manifest.csv` inside a folder."""
    path = Path(source)
    if path.is_file() and path.suffix.lower() == ".csv":
        return path
    if path.is_dir() and (path / MANIFEST_FILE).is_file():
        return path / MANIFEST_FILE
    return None


def _read_manifest_rows(path: Path) -> list[dict]:
    import csv

    try:
        # utf-8-sig also reads the byte-order mark that Excel writes at the start of "CSV UTF-8" files.
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            missing = [name for name in ("path", "label") if name not in (reader.fieldnames or [])]
            if missing:
                raise DatasetError(
                    f"{path}: missing column(s) {', '.join(missing)}; a manifest has columns path,label and optionally split"
                )
            return list(reader)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text (byte {exc.start}); save the manifest as UTF-8") from None
    except csv.Error as exc:
        raise DatasetError(f"{path}: invalid CSV ({exc})") from None


def _manifest_classes(manifest: Path) -> set[str]:
    classes_file = manifest.parent / "classes.json"
    if not classes_file.is_file():
        return set()
    import json

    try:
        names = json.loads(classes_file.read_text("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise DatasetError(f"{classes_file}: invalid JSON ({exc}); it should be a list of class names") from None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        raise DatasetError(f"{classes_file}: expected a JSON list of class names")
    return set(names)


def scan_manifest(
    manifest: Path,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Optional[ProgressCallback] = None,
    cache_dir: Optional[str | os.PathLike] = None,
) -> ScanResult:
    """Verify the images a `path,label[,split]` manifest lists (as `imgclf import` writes).

    Relative paths resolve against the manifest's folder. A `split` column with values
    train, val (or valid, validation) and test keeps that split. Class names come from a
    `classes.json` beside the manifest when there is one, else from the labels.
    """
    rows = _read_manifest_rows(manifest)
    result = ScanResult(root=str(manifest.resolve()))
    candidates: list[tuple[str, str]] = []
    candidate_splits: list[str] = []
    given_split: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        label = (row.get("label") or "").strip()
        raw_path = (row.get("path") or "").strip()
        if not raw_path or not label:
            result.skipped.append(FileIssue(raw_path or f"{manifest}, line {line}", "no_label" if raw_path else "no_path",
                                            f"{manifest}, line {line}: empty path or label"))
            continue
        path = Path(raw_path) if os.path.isabs(raw_path) else manifest.parent / raw_path
        if is_os_junk(path.name):
            result.ignored.append(FileIssue(str(path), "os_junk", f"{manifest}, line {line}: operating-system metadata file"))
            continue
        if not path.is_file():
            result.skipped.append(FileIssue(str(path), "missing", f"{manifest}, line {line}: file not found"))
            continue
        candidates.append((str(path.resolve()), label))
        given = (row.get("split") or "").strip()
        split = SPLIT_FOLDER_NAMES.get(given.lower())
        if given and split is None:
            raise DatasetError(
                f"{manifest}, line {line}: split {given!r} is not one of train, val (valid, validation) or test; "
                "fix the value or leave it empty for train"
            )
        candidate_splits.append(split or "train")
        if split is not None:
            given_split.setdefault(candidates[-1][0], split)
    labels = {label for _, label in candidates} | _manifest_classes(manifest)
    result.class_folders = sorted(labels)
    if given_split and "train" not in candidate_splits:
        raise DatasetError(f"{manifest}: the split column names no train rows; mark the training images as train")
    verify_files(candidates, max_pixels, progress, result, cache_dir)
    # verify_files keeps candidate order, so each record is matched to its own manifest row.
    remaining = iter(zip(candidates, candidate_splits))
    paired = []
    for record in result.records:
        split = next(split for (path, label), split in remaining if path == record.path and label == record.label)
        paired.append((record, split))
    paired.sort(key=lambda pair: pair[0].path)
    result.records = [record for record, _ in paired]
    if given_split:
        result.split_of = {record.path: given_split.get(record.path, "train") for record in result.records}
        result.record_splits = [split for _, split in paired]
    return result


def scan_dataset(
    root: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    progress: Optional[ProgressCallback] = None,
    cache_dir: Optional[str | os.PathLike] = None,
) -> ScanResult:
    """Scan a folder-per-class dataset root, a root already split into train/val/test, or a
    `path,label` manifest (a CSV file, or a folder holding `manifest.csv`).

    Raises:
        DatasetError: when `root` is missing, not a folder, or holds no class folders.
    """
    manifest = manifest_path(root)
    if manifest is not None:
        return scan_manifest(manifest, max_pixels, progress, cache_dir)
    base = Path(root)
    if not base.exists():
        raise DatasetError(f"{root}: dataset folder not found")
    if not base.is_dir():
        raise DatasetError(f"{root}: not a folder; give a folder holding one sub-folder per class")

    result = ScanResult(root=str(base.resolve()))
    split_folders = find_split_folders(base)
    candidates: list[tuple[str, str]] = []
    candidate_split: dict[str, str] = {}
    class_names: set[str] = set()
    if split_folders:
        split_paths = {folder.resolve() for folder in split_folders.values()}
        for child in sorted(base.iterdir()):
            if child.resolve() in split_paths:
                continue
            where = "ignored" if is_os_junk(child.name) else "skipped"
            files = walk_files(child, result.ignored) if child.is_dir() else [child]
            for path in files:
                reason = "os_junk" if where == "ignored" else "outside_split_folders"
                detail = "operating-system metadata file" if where == "ignored" else (
                    "not inside the train/val/test folders of an already split dataset")
                getattr(result, where).append(FileIssue(str(path), reason, detail))
        for split, folder in split_folders.items():
            found, classes = _collect_class_files(folder, result.ignored, result.skipped)
            candidates.extend(found)
            candidate_split.update((path, split) for path, _ in found)
            class_names.update(classes)
    else:
        candidates, classes = _collect_class_files(base, result.ignored, result.skipped)
        class_names.update(classes)

    if not class_names:
        raise DatasetError(
            f"{root}: no class folders found; a dataset root contains one sub-folder per class "
            "(for example photos/cats/*.jpg and photos/dogs/*.jpg)"
        )
    result.class_folders = sorted(class_names)
    verify_files(candidates, max_pixels, progress, result, cache_dir)
    result.records.sort(key=lambda record: record.path)
    if split_folders:
        result.split_of = {record.path: candidate_split[record.path] for record in result.records}
    return result


def iter_files(paths: Iterable[str]) -> list[str]:
    """Expand files, folders (recursively) and glob patterns into a sorted, de-duplicated file list.

    OS junk files inside folders are left out. Raises DatasetError for a path or pattern
    that matches nothing.
    """
    import glob

    found: list[str] = []
    for entry in paths:
        if any(char in entry for char in "*?["):
            matches = sorted(glob.glob(entry, recursive=True))
            if not matches:
                raise DatasetError(f"{entry}: the pattern matches no file")
        else:
            if not os.path.exists(entry):
                raise DatasetError(f"{entry}: file or folder not found")
            matches = [entry]
        for match in matches:
            if os.path.isdir(match):
                found.extend(str(path) for path in walk_files(Path(match), []))
            else:
                found.append(match)
    seen: set[str] = set()
    unique = []
    for path in found:
        if path not in seen:
            seen.add(path)
            unique.append(path)
    return unique
