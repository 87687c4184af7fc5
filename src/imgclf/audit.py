"""Dataset audit: class balance, unreadable files, duplicates, leakage between splits, label
conflicts, and images too small or too oddly shaped for training."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Optional

from imgclf.constants import DEFAULT_MAX_PIXELS, DEFAULT_NEAR_DISTANCE
from imgclf.scan import ProgressCallback, ScanResult, scan_dataset, verify_files
from imgclf.splitting import SPLITS, is_split_folder, read_split

# Reasons that mean an image file exists but cannot be used; `--strict` fails on them.
UNREADABLE_REASONS = {"empty", "truncated", "corrupt", "not_an_image", "too_many_pixels", "unreadable", "missing"}


def _scan_split_folder(folder: str, max_pixels: int, progress, cache_dir) -> tuple[ScanResult, list[str]]:
    """Verify the files a split folder lists, and return the scan and the split of each record.

    A file listed in two manifests gives two records with one path, so the splits are a
    list in record order rather than `ScanResult.split_of`, which stores one split per path.
    """
    split = read_split(folder)
    result = ScanResult(root=str(Path(folder).resolve()), class_folders=list(split.classes))
    rows = [(path, label, name) for name in SPLITS for path, label in split.rows[name]]
    verify_files([(path, label) for path, label, _ in rows], max_pixels, progress, result, cache_dir)
    # verify_files appends records in the order of its candidates, so they follow the rows that verified.
    verified = iter(result.records)
    record = next(verified, None)
    pairs = []
    for path, _, name in rows:
        if record is not None and record.path == path:
            pairs.append((record, name))
            record = next(verified, None)
    pairs.sort(key=lambda pair: pair[0].path)
    result.records = [record for record, _ in pairs]
    result.split_of = {record.path: name for record, name in pairs}
    return result, [name for _, name in pairs]


def _group_entries(scan: ScanResult, splits: list[str], groups: list[list[int]], kind: str) -> list[dict]:
    entries = []
    for group in groups:
        members = [scan.records[index] for index in group]
        entries.append({
            "kind": kind,
            "paths": [member.path for member in members],
            "labels": [member.label for member in members],
            "splits": [splits[index] for index in group] if splits else [],
        })
    return entries


def _duplicate_groups(scan: ScanResult, splits: list[str], near_distance: Optional[int]) -> list[dict]:
    """Exact-copy groups, then near-duplicate groups that are more than one exact group."""
    from imgclf.duplicates import UnionFind, exact_pairs, near_pairs

    records = scan.records
    exact = UnionFind(len(records))
    for first, second in exact_pairs(records):
        exact.union(first, second)
    exact_groups = [group for group in exact.groups() if len(group) > 1]
    entries = _group_entries(scan, splits, exact_groups, "exact")
    if near_distance is not None:
        near = UnionFind(len(records))
        for first, second, _ in near_pairs(records, near_distance):
            near.union(first, second)
        for first, second in exact_pairs(records):
            near.union(first, second)
        exact_of = {index: exact.find(index) for index in range(len(records))}
        near_groups = [group for group in near.groups() if len({exact_of[index] for index in group}) > 1]
        entries += _group_entries(scan, splits, near_groups, "near")
    return entries


def _size_findings(scan: ScanResult, image_size: tuple[int, int], max_aspect: float) -> tuple[list[dict], list[dict]]:
    height, width = image_size
    small, odd = [], []
    for record in scan.records:
        if record.width < width / 2 or record.height < height / 2:
            small.append({"path": record.path, "label": record.label, "width": record.width, "height": record.height})
        aspect = max(record.width / record.height, record.height / record.width)
        if aspect > max_aspect:
            odd.append({"path": record.path, "label": record.label, "width": record.width, "height": record.height,
                        "aspect_ratio": round(aspect, 2)})
    return small, odd


def audit_dataset(
    source: str | os.PathLike,
    near_distance: Optional[int] = DEFAULT_NEAR_DISTANCE,
    image_size: tuple[int, int] = (64, 64),
    max_aspect: float = 3.0,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    cache_dir: Optional[str | os.PathLike] = None,
    progress: Optional[ProgressCallback] = None,
) -> dict:
    """Audit a dataset root, a manifest or a split folder and return the findings as a JSON-ready dict.

    `image_size` is the training size (height, width): images under half of it in either
    side are listed as small. `max_aspect` is the largest long-to-short side ratio not listed.
    `failures` counts what `--strict` fails on: leakage groups, label-conflict groups and
    unreadable files.
    """
    if is_split_folder(source):
        scan, splits = _scan_split_folder(str(source), max_pixels, progress, cache_dir)
    else:
        scan = scan_dataset(source, max_pixels, progress, cache_dir)
        if scan.record_splits:
            splits = scan.record_splits
        else:
            splits = [scan.split_of[record.path] for record in scan.records] if scan.split_of else []
    counts = Counter(record.label for record in scan.records)
    per_class = {name: counts.get(name, 0) for name in scan.class_folders}
    non_empty = [count for count in per_class.values() if count]
    groups = _duplicate_groups(scan, splits, near_distance)
    leakage = [group for group in groups if len(set(group["splits"])) > 1]
    conflicts = [group for group in groups if len(set(group["labels"])) > 1]
    unreadable = [issue.__dict__ for issue in scan.skipped if issue.reason in UNREADABLE_REASONS]
    small, odd = _size_findings(scan, image_size, max_aspect)
    split_counts = {}
    if splits:
        per_split = Counter(zip((record.label for record in scan.records), splits))
        split_counts = {name: {split: per_split[name, split] for split in SPLITS} for name in scan.class_folders}
    return {
        "source": str(Path(source).resolve()),
        "n_images": len(scan.records),
        "n_files": scan.n_files,
        "classes": per_class,
        "split_counts": split_counts,
        "imbalance_ratio": round(max(non_empty) / min(non_empty), 2) if non_empty else None,
        "empty_classes": [name for name, count in per_class.items() if count == 0],
        "skipped": [issue.__dict__ for issue in scan.skipped],
        "ignored": [issue.__dict__ for issue in scan.ignored],
        "unreadable": unreadable,
        "near_duplicate_distance": near_distance,
        "duplicate_groups": groups,
        "leakage": leakage,
        "label_conflicts": conflicts,
        "small_images": small,
        "unusual_aspect_ratios": odd,
        "image_size": list(image_size),
        "max_aspect_ratio": max_aspect,
        "max_image_pixels": max_pixels,
        "failures": {"leakage": len(leakage), "label_conflicts": len(conflicts), "unreadable": len(unreadable)},
    }
