"""Stratified train/val/test splits written as manifests, and reading them back.

A split folder holds `train.csv`, `val.csv`, `test.csv` (columns `path,label`, paths to the
original files), `classes.json` (class names in index order) and `split_report.json`.

Class order: class names sorted by Unicode code point (Python's `sorted`), the same order
Keras' `image_dataset_from_directory` uses. Index i of every model output is `classes[i]`.

Byte-identical files form one group that always lands in one split. Identical files under
different classes are label conflicts: they are left out of every split and reported.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from imgclf.errors import DatasetError
from imgclf.scan import FileIssue, ImageRecord, ScanResult

SPLITS = ("train", "val", "test")
MANIFEST_FIELDS = ("path", "label")


@dataclass
class Split:
    """A dataset split: ordered class names and (path, label) rows per split."""

    classes: list[str]
    rows: dict[str, list[tuple[str, str]]]
    folder: Optional[str] = None
    report: dict = field(default_factory=dict)

    def counts(self) -> dict[str, dict[str, int]]:
        """Images per class per split: {class: {split: n}}."""
        table = {name: {split: 0 for split in SPLITS} for name in self.classes}
        for split, rows in self.rows.items():
            for _, label in rows:
                table[label][split] += 1
        return table

    def manifest_hash(self) -> str:
        """SHA-256 over the class list and every manifest row, identifying the data a run used."""
        digest = hashlib.sha256(json.dumps(self.classes, ensure_ascii=False).encode())
        for split in SPLITS:
            for path, label in self.rows.get(split, []):
                digest.update(f"{split}\t{path}\t{label}\n".encode())
        return digest.hexdigest()


def parse_ratios(text: str) -> tuple[float, float, float]:
    """Parse '0.7,0.15,0.15' into three ratios that sum to 1."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise DatasetError(f"--ratios {text!r}: expected three numbers such as 0.7,0.15,0.15") from None
    return validate_ratios(values, f"--ratios {text!r}")


def validate_ratios(values: Sequence[float], where: str) -> tuple[float, float, float]:
    """Check three train/val/test ratios: non-negative, train positive, summing to 1 (within 1e-6)."""
    if len(values) != 3:
        raise DatasetError(f"{where}: expected three ratios (train, val, test), got {len(values)}")
    train, val, test = (float(value) for value in values)
    if not all(math.isfinite(value) for value in (train, val, test)):
        raise DatasetError(f"{where}: ratios must be finite numbers, got {train}, {val}, {test}")
    if min(train, val, test) < 0 or train <= 0:
        raise DatasetError(f"{where}: ratios must be non-negative and the train ratio positive")
    if abs(train + val + test - 1.0) > 1e-6:
        raise DatasetError(f"{where}: ratios sum to {train + val + test:g}; they must sum to 1")
    return train, val, test


def _drop_repeated_paths(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[FileIssue]]:
    """Keep one record per path: a manifest may list a file twice. A file listed under two labels
    is a label conflict and left out; a repeat under the same label is dropped."""
    by_path: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_path[record.path].append(record)
    unique: list[ImageRecord] = []
    issues: list[FileIssue] = []
    for path, listed in by_path.items():
        labels = sorted({record.label for record in listed})
        if len(labels) > 1:
            issues.append(FileIssue(path, "label_conflict",
                                    f"listed {len(listed)} times, under {', '.join(map(repr, labels))}; keep one label"))
            continue
        unique.append(listed[0])
        if len(listed) > 1:
            issues.append(FileIssue(path, "listed_twice", f"listed {len(listed)} times; used once"))
    return unique, issues


def _drop_label_conflicts(records: list[ImageRecord]) -> tuple[list[ImageRecord], list[FileIssue], list[list[str]]]:
    """Leave out byte-identical files labelled differently.

    Returns the usable records, the files left out as label conflicts, and the groups of
    byte-identical files (paths) that remain.
    """
    by_hash: dict[str, list[ImageRecord]] = defaultdict(list)
    for record in records:
        by_hash[record.sha256].append(record)
    usable: list[ImageRecord] = []
    conflicts: list[FileIssue] = []
    duplicate_groups: list[list[str]] = []
    for members in by_hash.values():
        labels = sorted({member.label for member in members})
        if len(labels) > 1:
            paths = [member.path for member in members]
            for member in members:
                others = ", ".join(path for path in paths if path != member.path)
                conflicts.append(FileIssue(
                    member.path,
                    "label_conflict",
                    f"identical content is labelled {', '.join(repr(label) for label in labels)} "
                    f"(also at {others}); keep the file under one class",
                ))
            continue
        usable.extend(members)
        if len(members) > 1:
            duplicate_groups.append(sorted(member.path for member in members))
    usable.sort(key=lambda record: record.path)
    duplicate_groups.sort()
    return usable, conflicts, duplicate_groups


def unit_label(members: list[ImageRecord]) -> str:
    """The class a group is stratified by: its most common label, ties going to the first in class order."""
    counts = Counter(member.label for member in members)
    return min(counts, key=lambda label: (-counts[label], label))


def _form_units(
    records: list[ImageRecord], near_distance: Optional[int], group_pattern: Optional[str], root: str
) -> tuple[list[list[ImageRecord]], list[dict]]:
    """Group records that must share a split; returns the groups and a report of the multi-file ones
    that perceptual or subject links formed."""
    from imgclf.duplicates import find_groups

    index_groups, links = find_groups(records, near_distance, group_pattern, root)
    rule_of: dict[int, set[str]] = defaultdict(set)
    for rule, pairs in links.items():
        for first, second in pairs:
            rule_of[first].add(rule)
            rule_of[second].add(rule)
    units = [[records[index] for index in group] for group in index_groups]
    kept_together = []
    for group, members in zip(index_groups, units):
        rules = sorted(set().union(*(rule_of[index] for index in group)))
        if len(group) > 1 and rules != ["exact"]:
            kept_together.append({
                "paths": [member.path for member in members],
                "labels": sorted({member.label for member in members}),
                "linked_by": rules,
            })
    return units, kept_together


def _describe_class_size(label: str, n_distinct: int, n_files: int) -> str:
    if n_files == n_distinct:
        return f"{label!r} ({n_distinct} image{'s' if n_distinct != 1 else ''})"
    return f"{label!r} ({n_distinct} distinct of {n_files} images; byte-identical copies count once)"


def _check_class_sizes(
    label_counts: Counter, ratios: tuple[float, float, float], file_counts: Optional[Counter] = None
) -> None:
    """Raise when a class has fewer distinct images (`label_counts`) than splits to fill."""
    needed = sum(1 for ratio in ratios if ratio > 0)
    small = sorted((label, count) for label, count in label_counts.items() if count < needed)
    if small:
        file_counts = file_counts or label_counts
        names = ", ".join(_describe_class_size(label, count, file_counts[label]) for label, count in small)
        split_names = [name for name, ratio in zip(SPLITS, ratios) if ratio > 0]
        raise DatasetError(
            f"too few images to stratify class {names}: each class needs at least {needed} distinct images, "
            f"one for each of {', '.join(split_names)}; add images to it, merge it into another class, "
            "or remove its folder"
        )


def _allocate(count: int, ratios: tuple[float, float, float]) -> list[int]:
    """Split `count` units of one class into per-split sizes: rounded shares, at least one for each
    split with a positive ratio, the remainder going to train."""
    sizes = [0, 0, 0]
    for index in (2, 1):
        if ratios[index] > 0:
            sizes[index] = max(1, int(round(count * ratios[index])))
    while sum(sizes[1:]) > count - 1:
        largest = 1 if sizes[1] >= sizes[2] else 2
        sizes[largest] -= 1
    sizes[0] = count - sizes[1] - sizes[2]
    return sizes


def _stratified_assign(labels: list[str], ratios: tuple[float, float, float], seed: int) -> list[str]:
    """Assign each unit to a split, class by class.

    Each class is shuffled with its own seeded generator and cut by its own rounded shares,
    so every class with at least one unit per split appears in every split. Scikit-learn's
    StratifiedShuffleSplit rounds over the whole dataset and can leave a small class out
    of val or test, or refuse a test split with fewer images than classes.
    """
    assignment = [""] * len(labels)
    by_class: dict[str, list[int]] = defaultdict(list)
    for index, label in enumerate(labels):
        by_class[label].append(index)
    for class_index, label in enumerate(sorted(by_class)):
        members = by_class[label]
        order = np.random.default_rng([seed, class_index]).permutation(len(members))
        sizes = _allocate(len(members), ratios)
        names = ["train"] * sizes[0] + ["val"] * sizes[1] + ["test"] * sizes[2]
        for position, name in zip(order, names):
            assignment[members[position]] = name
    return assignment


def _check_empty_classes(scan: ScanResult, usable_labels: set[str], drop_empty_classes: bool) -> list[str]:
    empty = [name for name in scan.class_folders if name not in usable_labels]
    if empty and not drop_empty_classes:
        raise DatasetError(
            f"{scan.root}: class folder(s) without usable images: {', '.join(repr(name) for name in empty)}; "
            "add images, remove the folder(s), or pass --drop-empty-classes to leave them out"
        )
    return empty


def split_scan(
    scan: ScanResult,
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int = 42,
    drop_empty_classes: bool = False,
    near_distance: Optional[int] = None,
    group_pattern: Optional[str] = None,
) -> Split:
    """Split scanned images into train/val/test, stratified by class, duplicates kept together.

    For a root that was already split (train/ plus val/ and/or test/), the given split is
    kept; when it has no val folder, val is split off train with the val share of
    `ratios`. Duplicates found across the given splits are reported as leakage.

    Byte-identical files always form one group. `near_distance` (bits of perceptual-hash
    difference, None for off) adds near duplicates, and `group_pattern` (a regular
    expression on paths relative to the root) adds subject groups; a group's images share a
    split, stratified by the group's most common label.

    Raises:
        DatasetError: for classes without images, classes too small for the ratios, or
            fewer than two classes.
    """
    ratios = validate_ratios(ratios, "split ratios")
    unique, listed_twice = _drop_repeated_paths(scan.records)
    records, conflicts, duplicate_groups = _drop_label_conflicts(unique)
    conflicts = listed_twice + conflicts
    groups, kept_together = _form_units(records, near_distance, group_pattern, scan.root)
    usable_labels = {record.label for record in records}
    empty_classes = _check_empty_classes(scan, usable_labels, drop_empty_classes)
    classes = sorted(usable_labels)
    if len(classes) < 2:
        raise DatasetError(
            f"{scan.root}: found {len(classes)} class with images ({', '.join(classes) or 'none'}); "
            "a classifier needs at least two class folders"
        )

    rows: dict[str, list[tuple[str, str]]] = {split: [] for split in SPLITS}
    leakage: list[list[str]] = []
    if scan.split_of:
        _keep_given_split(groups, scan.split_of, ratios, seed, rows, leakage)
        _check_given_split_classes(rows, classes)
    else:
        label_counts = Counter(unit_label(members) for members in groups)
        file_counts = Counter(member.label for members in groups for member in members)
        _check_class_sizes(label_counts, ratios, file_counts)
        assignment = _stratified_assign([unit_label(members) for members in groups], ratios, seed)
        for members, split in zip(groups, assignment):
            rows[split].extend((member.path, member.label) for member in members)
    for split in SPLITS:
        rows[split].sort()

    split = Split(classes=classes, rows=rows)
    split.report = _build_report(scan, split, ratios, seed, conflicts, duplicate_groups, leakage, empty_classes)
    split.report["near_duplicate_distance"] = near_distance
    split.report["group_by"] = group_pattern
    split.report["kept_together"] = kept_together
    return split


def _check_given_split_classes(rows: dict, classes: list[str]) -> None:
    """Every class of an already split dataset needs training images, and images wherever the split has any."""
    missing = []
    for split_name in SPLITS:
        if not rows[split_name]:
            continue
        present = {label for _, label in rows[split_name]}
        missing.extend(f"{name!r} has no {split_name} images" for name in classes if name not in present)
    if missing:
        raise DatasetError(
            f"the given split is incomplete: {'; '.join(missing)}; move some images into those folders, "
            "or remove the class from every split"
        )


def _keep_given_split(groups, split_of, ratios, seed, rows, leakage) -> None:
    has_val = any(split_of[member.path] == "val" for members in groups for member in members)
    carve_val: list[list[ImageRecord]] = []
    for members in groups:
        splits = {split_of[member.path] for member in members}
        if len(splits) > 1:
            leakage.append([member.path for member in members])
        for member in members:
            where = split_of[member.path]
            if where == "train" and not has_val and ratios[1] > 0:
                continue
            rows[where].append((member.path, member.label))
        if not has_val and ratios[1] > 0:
            train_members = [member for member in members if split_of[member.path] == "train"]
            if train_members:
                carve_val.append(train_members)
    if carve_val:
        val_share = ratios[1] / (ratios[0] + ratios[1])
        sub_ratios = (1.0 - val_share, val_share, 0.0)
        labels = [unit_label(members) for members in carve_val]
        _check_class_sizes(Counter(labels), sub_ratios)
        assignment = _stratified_assign(labels, sub_ratios, seed)
        for members, where in zip(carve_val, assignment):
            rows[where].extend((member.path, member.label) for member in members)


def _build_report(scan, split, ratios, seed, conflicts, duplicate_groups, leakage, empty_classes) -> dict:
    skipped = scan.skipped + conflicts
    return {
        "root": scan.root,
        "ratios": list(ratios),
        "seed": seed,
        "already_split": bool(scan.split_of),
        "classes": split.classes,
        "counts": split.counts(),
        "totals": {name: len(rows) for name, rows in split.rows.items()},
        "files_scanned": scan.n_files,
        "images_used": sum(len(rows) for rows in split.rows.values()),
        "skipped": [issue.__dict__ for issue in skipped],
        "ignored": [issue.__dict__ for issue in scan.ignored],
        "skipped_by_reason": dict(Counter(issue.reason for issue in skipped)),
        "ignored_by_reason": dict(Counter(issue.reason for issue in scan.ignored)),
        "duplicate_groups": duplicate_groups,
        "leakage_across_given_splits": leakage,
        "empty_classes_dropped": empty_classes,
        "class_imbalance_ratio": _imbalance_ratio(split),
    }


def _imbalance_ratio(split: Split) -> float:
    """Images in the largest class divided by images in the smallest, over all splits, to 2 decimals.

    Every class in `split.classes` has at least one image, so the divisor is never 0.
    """
    totals = [sum(per_split.values()) for per_split in split.counts().values()]
    return round(max(totals) / min(totals), 2)


IMBALANCE_WARNING_RATIO = 10.0
FEW_IMAGES_PER_CLASS = 20


def data_warnings(split: Split) -> list[str]:
    """Warnings about class imbalance and classes with few training images, for people to read."""
    warnings = []
    totals = {name: sum(per_split.values()) for name, per_split in split.counts().items()}
    largest = max(totals, key=totals.get)
    smallest = min(totals, key=totals.get)
    ratio = totals[largest] / totals[smallest]
    if ratio > IMBALANCE_WARNING_RATIO:
        warnings.append(
            f"class imbalance {ratio:.1f}:1 ({largest!r} has {totals[largest]} images, {smallest!r} {totals[smallest]}); "
            "accuracy alone will flatter the model, so read per-class recall and macro F1 from `imgclf evaluate`"
        )
    few = sorted(name for name, per_split in split.counts().items() if per_split["train"] < FEW_IMAGES_PER_CLASS)
    if few:
        warnings.append(
            f"fewer than {FEW_IMAGES_PER_CLASS} training images in class(es) {', '.join(repr(name) for name in few)}; "
            "expect a large gap between training and validation accuracy, and add images where you can"
        )
    return warnings


def write_split(split: Split, out: str | os.PathLike) -> Path:
    """Write the manifests, classes.json and split_report.json into `out` (created if needed)."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for name in SPLITS:
        with open(folder / f"{name}.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(MANIFEST_FIELDS)
            writer.writerows(split.rows.get(name, []))
    (folder / "classes.json").write_text(json.dumps(split.classes, ensure_ascii=False, indent=2) + "\n", "utf-8")
    report = dict(split.report, manifest_sha256=split.manifest_hash())
    (folder / "split_report.json").write_text(json.dumps(report, ensure_ascii=False, indent=2) + "\n", "utf-8")
    split.folder = str(folder)
    return folder


def is_split_folder(path: str | os.PathLike) -> bool:
    """Tell whether `path` holds the manifests that `write_split` writes."""
    folder = Path(path)
    return (folder / "classes.json").is_file() and (folder / "train.csv").is_file()


def _read_manifest(path: Path, classes: list[str]) -> list[tuple[str, str]]:
    if not path.is_file():
        return []
    known = set(classes)
    rows: list[tuple[str, str]] = []
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [name for name in MANIFEST_FIELDS if name not in (reader.fieldnames or [])]
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(missing)}; a manifest has columns path,label")
        for line, row in enumerate(reader, start=2):
            label = row["label"]
            if label not in known:
                raise DatasetError(
                    f"{path}, line {line}: label {label!r} is not in classes.json ({', '.join(classes)})"
                )
            file_path = row["path"]
            if not os.path.isabs(file_path):
                file_path = str((path.parent / file_path).resolve())
            rows.append((file_path, label))
    return rows


def read_split(folder: str | os.PathLike) -> Split:
    """Read a split folder written by `write_split` (relative paths resolve against the folder)."""
    base = Path(folder)
    if not is_split_folder(base):
        raise DatasetError(f"{folder}: not a split folder (expected classes.json and train.csv; run `imgclf split`)")
    try:
        classes = json.loads((base / "classes.json").read_text("utf-8"))
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{base / 'classes.json'}: invalid JSON ({exc})") from None
    if not isinstance(classes, list) or not all(isinstance(name, str) for name in classes) or len(classes) < 2:
        raise DatasetError(f"{base / 'classes.json'}: expected a JSON list of at least two class names")
    rows = {name: _read_manifest(base / f"{name}.csv", classes) for name in SPLITS}
    report_path = base / "split_report.json"
    report = json.loads(report_path.read_text("utf-8")) if report_path.is_file() else {}
    return Split(classes=classes, rows=rows, folder=str(base), report=report)
