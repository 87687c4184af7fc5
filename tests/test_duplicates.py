import numpy as np
import pytest
from PIL import Image

from conftest import make_dataset, make_image
from imgclf.constants import DEFAULT_NEAR_DISTANCE
from imgclf.duplicates import UnionFind, find_groups, near_pairs, subject_keys
from imgclf.errors import DatasetError
from imgclf.scan import scan_dataset, verify_image
from imgclf.splitting import SPLITS, split_scan


def _photo(path, seed=0, size=(96, 80)):
    """A smooth synthetic photo: blurred shapes, so resizing and JPEG keep its perceptual hash."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)
    image = Image.fromarray(coarse).resize(size, Image.Resampling.BICUBIC)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return image


def _split_of(split, name):
    return next(where for where in SPLITS for path, _ in split.rows[where] if path.endswith(name))


def test_reencoded_resized_copy_is_within_default_distance(tmp_path):
    original = _photo(tmp_path / "a.png")
    original.resize((60, 50)).save(tmp_path / "b.jpg", quality=70)
    first = verify_image(str(tmp_path / "a.png"), "x")
    second = verify_image(str(tmp_path / "b.jpg"), "x")
    assert near_pairs([first, second], DEFAULT_NEAR_DISTANCE) != []


def test_different_photos_are_not_near_duplicates(tmp_path):
    records = [verify_image(str(tmp_path / f"{seed}.png"), "x") for seed in range(6)
               if _photo(tmp_path / f"{seed}.png", seed=seed)]
    assert near_pairs(records, DEFAULT_NEAR_DISTANCE) == []


def test_split_keeps_near_duplicates_together(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=10)
    original = _photo(root / "cat" / "orig.png", seed=42)
    for index, width in enumerate((80, 70, 50)):
        original.resize((width, width * 80 // 96)).save(root / "cat" / f"copy_{index}.jpg", quality=80)
    split = split_scan(scan_dataset(root), seed=4, near_distance=DEFAULT_NEAR_DISTANCE)
    where = {_split_of(split, name) for name in ("orig.png", "copy_0.jpg", "copy_1.jpg", "copy_2.jpg")}
    assert len(where) == 1
    assert len(split.report["kept_together"]) == 1
    assert split.report["kept_together"][0]["linked_by"] == ["near"]


def test_split_without_near_distance_reports_no_groups(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=10)
    original = _photo(root / "cat" / "orig.png", seed=42)
    original.resize((70, 58)).save(root / "cat" / "copy.jpg", quality=80)
    split = split_scan(scan_dataset(root), seed=4, near_distance=None)
    assert split.report["kept_together"] == []


def test_group_by_keeps_one_subject_in_one_split(tmp_path):
    root = tmp_path / "plants"
    for label, rgb in (("healthy", (20, 200, 20)), ("sick", (200, 200, 20))):
        for plant in range(6):
            for shot in range(3):
                make_image(root / label / f"plant{plant}_{shot}.png", rgb, seed=plant * 10 + shot + len(label) * 100)
    split = split_scan(scan_dataset(root), seed=1, group_pattern=r"/(plant\d+)_")
    for label in ("healthy", "sick"):
        for plant in range(6):
            where = {_split_of(split, f"{label}/plant{plant}_{shot}.png") for shot in range(3)}
            assert len(where) == 1, (label, plant, where)
    assert all(group["linked_by"] == ["subject"] for group in split.report["kept_together"])


def test_subject_keys_match_relative_paths(tmp_path):
    records = [verify_image(str(make_image(tmp_path / "root" / "a" / "x_1.png", (1, 2, 3))), "a")]
    assert subject_keys(records, r"^a/(x)_", str(tmp_path / "root")) == ["x"]


def test_group_by_invalid_regex_names_pattern(tmp_path):
    with pytest.raises(DatasetError, match=r"--group-by '\(unclosed': invalid regular expression"):
        subject_keys([], "(unclosed")


def test_union_find_merges_chains():
    sets = UnionFind(5)
    sets.union(0, 3)
    sets.union(3, 4)
    assert sets.groups() == [[0, 3, 4], [1], [2]]


def test_find_groups_combines_rules(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3)
    records = scan_dataset(root).records
    groups, links = find_groups(records, near_distance=None, group_pattern=r"/(cat|dog)_", root=str(root))
    assert links["near"] == []
    assert sorted(len(group) for group in groups) == [1, 1, 1, 3, 3]
