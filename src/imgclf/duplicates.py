"""Groups of images that must stay together: exact copies, near duplicates and user-defined subjects.

Exact copies share a SHA-256 of their bytes. Near duplicates are images whose 64-bit
perceptual hashes (DCT hash from `imagehash`) differ in at most `max_distance` bits: the
same photo re-encoded, resized, lightly cropped or recoloured. A `--group-by` regular
expression puts images whose paths give the same match (its first group when it has one)
into one subject group, for example every photo of one plant or one part serial number.
"""

from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from imgclf.constants import DEFAULT_NEAR_DISTANCE
from imgclf.errors import DatasetError
from imgclf.scan import ImageRecord



class UnionFind:
    """Disjoint sets over 0..n-1, for merging groups found by different rules."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, item: int) -> int:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, first: int, second: int) -> None:
        a, b = self.find(first), self.find(second)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def groups(self) -> list[list[int]]:
        """Every set, members ascending, sets ordered by their smallest member."""
        members: dict[int, list[int]] = {}
        for item in range(len(self.parent)):
            members.setdefault(self.find(item), []).append(item)
        return sorted(members.values(), key=lambda group: group[0])


def exact_pairs(records: Sequence[ImageRecord]) -> list[tuple[int, int]]:
    """Index pairs (first, other) linking every file to the first file with the same bytes."""
    first_of: dict[str, int] = {}
    pairs = []
    for index, record in enumerate(records):
        first = first_of.setdefault(record.sha256, index)
        if first != index:
            pairs.append((first, index))
    return pairs


def near_pairs(records: Sequence[ImageRecord], max_distance: int, block: int = 2048) -> list[tuple[int, int, int]]:
    """Index pairs (i, j, distance), i < j, whose perceptual hashes differ in at most `max_distance` bits.

    Compares every pair in blocks of `block` rows, so time grows with the square of the number
    of images (about a second per 10,000 images on one core, by estimate).
    """
    # NOTE: quadratic; beyond a few hundred thousand images a BK-tree or multi-index hashing would be needed.
    hashes = np.array([int(record.phash, 16) if record.phash else 0 for record in records], dtype=np.uint64)
    valid = np.array([bool(record.phash) for record in records])
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        rows = hashes[start:start + block]
        distances = np.bitwise_count(rows[:, None] ^ hashes[None, :])
        close_rows, close_columns = np.nonzero(distances <= max_distance)
        for row, column in zip(close_rows.tolist(), close_columns.tolist()):
            first = start + row
            if first < column and valid[first] and valid[column]:
                pairs.append((first, column, int(distances[row, column])))
    return pairs


def subject_keys(records: Sequence[ImageRecord], pattern: str, root: Optional[str] = None) -> list[Optional[str]]:
    """The `--group-by` key of each record: the regex's first group (or whole match) on its path.

    Paths are matched relative to `root` when they lie under it, so a pattern need not know
    where the dataset sits. Records whose path does not match get None and stay on their own.
    """
    try:
        regex = re.compile(pattern)
    except re.error as exc:
        raise DatasetError(f"--group-by {pattern!r}: invalid regular expression ({exc})") from None
    keys: list[Optional[str]] = []
    prefix = root.rstrip("/") + "/" if root else None
    for record in records:
        path = record.path[len(prefix):] if prefix and record.path.startswith(prefix) else record.path
        match = regex.search(path)
        if match is None:
            keys.append(None)
        else:
            keys.append(match.group(1) if regex.groups else match.group(0))
    return keys


def subject_pairs(keys: Sequence[Optional[str]]) -> list[tuple[int, int]]:
    first_of: dict[str, int] = {}
    pairs = []
    for index, key in enumerate(keys):
        if key is None:
            continue
        first = first_of.setdefault(key, index)
        if first != index:
            pairs.append((first, index))
    return pairs


def find_groups(
    records: Sequence[ImageRecord],
    near_distance: Optional[int] = DEFAULT_NEAR_DISTANCE,
    group_pattern: Optional[str] = None,
    root: Optional[str] = None,
) -> tuple[list[list[int]], dict[str, list[tuple[int, int]]]]:
    """Merge exact, near-duplicate and subject links into groups of record indices.

    Returns every group (singletons included) and the links found by each rule:
    {"exact": [...], "near": [...], "subject": [...]}. `near_distance` None turns the
    perceptual comparison off.
    """
    links: dict[str, list[tuple[int, int]]] = {"exact": exact_pairs(records), "near": [], "subject": []}
    if near_distance is not None:
        links["near"] = [(i, j) for i, j, _ in near_pairs(records, near_distance)]
    if group_pattern:
        links["subject"] = subject_pairs(subject_keys(records, group_pattern, root))
    sets = UnionFind(len(records))
    for rule_links in links.values():
        for first, second in rule_links:
            sets.union(first, second)
    return sets.groups(), links
