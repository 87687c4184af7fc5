import csv
import json
import shutil

import pytest

from conftest import make_dataset, make_image
from imgclf.errors import DatasetError
from imgclf.scan import scan_dataset
from imgclf.splitting import SPLITS, parse_ratios, read_split, split_scan, write_split


def _split_of(split, path_fragment):
    for name in SPLITS:
        if any(path_fragment in path for path, _ in split.rows[name]):
            return name
    return None


def test_split_is_stratified_per_class(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=20)
    split = split_scan(scan_dataset(root), (0.7, 0.15, 0.15), seed=1)
    counts = split.counts()
    for name in ("cat", "dog", "fish"):
        assert counts[name] == {"train": 14, "val": 3, "test": 3}


def test_split_same_seed_gives_same_split(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=10)
    first = split_scan(scan_dataset(root), seed=5)
    second = split_scan(scan_dataset(root), seed=5)
    assert first.rows == second.rows


def test_split_other_seed_gives_other_split(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=10)
    assert split_scan(scan_dataset(root), seed=5).rows != split_scan(scan_dataset(root), seed=6).rows


def test_split_keeps_identical_files_together(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=12)
    for copy in range(4):
        shutil.copy(root / "cat" / "cat_0.jpg", root / "cat" / f"copy_{copy}.jpg")
    split = split_scan(scan_dataset(root), seed=3)
    where = {_split_of(split, f"copy_{copy}.jpg") for copy in range(4)} | {_split_of(split, "cat_0.jpg")}
    assert len(where) == 1
    assert len(split.report["duplicate_groups"]) == 1
    assert len(split.report["duplicate_groups"][0]) == 5


def test_split_reports_label_conflict_and_leaves_files_out(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    shutil.copy(root / "cat" / "cat_1.png", root / "dog" / "looks_like_cat.png")
    split = split_scan(scan_dataset(root), seed=3)
    conflicts = [issue for issue in split.report["skipped"] if issue["reason"] == "label_conflict"]
    assert sorted(issue["path"].rsplit("/", 1)[1] for issue in conflicts) == ["cat_1.png", "looks_like_cat.png"]
    assert "'cat', 'dog'" in conflicts[0]["detail"]
    assert _split_of(split, "looks_like_cat.png") is None


def test_split_accounts_for_every_file(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    (root / "cat" / "notes.txt").write_text("shot on a phone")
    (root / "dog" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (root / "readme.md").write_text("top-level file")
    split = split_scan(scan_dataset(root), seed=3)
    report = split.report
    assert report["images_used"] + len(report["skipped"]) + len(report["ignored"]) == report["files_scanned"]
    assert report["files_scanned"] == 21


def test_split_small_class_error_names_class_count_and_fix(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    for extra in ("bird_0.png", "bird_1.png"):
        make_image(root / "bird" / extra, (128, 128, 0), seed=len(extra) + hash(extra) % 100)
    with pytest.raises(DatasetError, match=r"'bird' \(2 images\).*at least 3 distinct images.*add images"):
        split_scan(scan_dataset(root), (0.7, 0.15, 0.15), seed=3)


def test_split_two_way_ratios_need_two_images_per_class(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    split = split_scan(scan_dataset(root), (0.5, 0.5, 0.0), seed=3)
    assert split.report["totals"] == {"train": 6, "val": 6, "test": 0}


def test_split_single_class_is_rejected(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=5, classes={"cat": (200, 0, 0)})
    with pytest.raises(DatasetError, match=r"at least two class folders"):
        split_scan(scan_dataset(root))


@pytest.mark.parametrize("text", ["0.7,0.3", "0.7,0.2,0.2", "a,b,c", "0,0.5,0.5"])
def test_parse_ratios_rejects_bad_text(text):
    with pytest.raises(DatasetError, match=r"--ratios|ratios"):
        parse_ratios(text)


def test_presplit_root_keeps_given_split(tmp_path):
    base = tmp_path / "given"
    make_dataset(base / "train", per_class=6)
    make_dataset(base / "valid", per_class=2, size=(17, 17))
    make_dataset(base / "test", per_class=2, size=(18, 18))
    split = split_scan(scan_dataset(base), seed=1)
    assert split.report["already_split"] is True
    assert split.report["totals"] == {"train": 18, "val": 6, "test": 6}
    assert all("/valid/" in path for path, _ in split.rows["val"])


def test_presplit_without_val_carves_val_from_train(tmp_path):
    base = tmp_path / "given"
    make_dataset(base / "train", per_class=20)
    make_dataset(base / "test", per_class=3, size=(18, 18))
    split = split_scan(scan_dataset(base), (0.7, 0.15, 0.15), seed=1)
    assert split.report["totals"]["test"] == 9
    assert all("/train/" in path for path, _ in split.rows["val"])
    assert split.report["totals"]["train"] + split.report["totals"]["val"] == 60
    assert split.report["totals"]["val"] > 0


def test_presplit_reports_duplicates_across_given_splits(tmp_path):
    base = tmp_path / "given"
    make_dataset(base / "train", per_class=4)
    make_dataset(base / "val", per_class=2, size=(17, 17))
    shutil.copy(base / "train" / "cat" / "cat_0.jpg", base / "val" / "cat" / "leaked.jpg")
    split = split_scan(scan_dataset(base), seed=1)
    assert len(split.report["leakage_across_given_splits"]) == 1


def test_write_and_read_split_round_trip(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    split = split_scan(scan_dataset(root), seed=2)
    folder = write_split(split, tmp_path / "split")
    again = read_split(folder)
    assert again.classes == ["cat", "dog", "fish"]
    assert again.rows == split.rows
    assert again.manifest_hash() == split.manifest_hash()
    with open(folder / "train.csv", newline="") as handle:
        assert next(csv.reader(handle)) == ["path", "label"]
    report = json.loads((folder / "split_report.json").read_text())
    assert report["manifest_sha256"] == split.manifest_hash()


def test_read_split_rejects_unknown_label(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    folder = write_split(split_scan(scan_dataset(root), seed=2), tmp_path / "split")
    with open(folder / "val.csv", "a", newline="") as handle:
        csv.writer(handle).writerow([str(root / "cat" / "cat_0.jpg"), "horse"])
    with pytest.raises(DatasetError, match=r"val\.csv, line \d+: label 'horse' is not in classes\.json"):
        read_split(folder)


def test_read_split_resolves_relative_paths(tmp_path):
    folder = tmp_path / "split"
    make_image(tmp_path / "images" / "a.png", (1, 2, 3))
    folder.mkdir()
    (folder / "classes.json").write_text('["a", "b"]')
    (folder / "train.csv").write_text("path,label\n../images/a.png,a\n")
    split = read_split(folder)
    assert split.rows["train"] == [(str((tmp_path / "images" / "a.png").resolve()), "a")]


def test_class_order_is_code_point_order(tmp_path):
    classes = {"b": (200, 0, 0), "B": (0, 200, 0), "ä": (0, 0, 200), "a": (100, 100, 0)}
    root = make_dataset(tmp_path / "photos", per_class=3, classes=classes)
    assert split_scan(scan_dataset(root), seed=1).classes == ["B", "a", "b", "ä"]


def test_data_warnings_name_imbalance_and_small_classes(tmp_path):
    from imgclf.splitting import data_warnings

    root = make_dataset(tmp_path / "photos", per_class=44, classes={"many": (200, 0, 0)})
    make_dataset(root, per_class=4, classes={"few": (0, 0, 200)})
    warnings = data_warnings(split_scan(scan_dataset(root), seed=1))
    assert len(warnings) == 2
    assert "class imbalance 11.0:1 ('many' has 44 images, 'few' 4)" in warnings[0]
    assert "training images in class(es) 'few'" in warnings[1]


def test_data_warnings_silent_for_balanced_classes(tmp_path):
    from imgclf.splitting import data_warnings

    root = make_dataset(tmp_path / "photos", per_class=30)
    assert data_warnings(split_scan(scan_dataset(root), seed=1)) == []


def test_manifest_csv_is_scanned_and_split(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    lines = ["path,label"] + [f"photos/{p.parent.name}/{p.name},{p.parent.name}" for p in sorted(root.rglob("*.*"))]
    lines.append("photos/cat/absent.jpg,cat")
    (tmp_path / "manifest.csv").write_text("\n".join(lines) + "\n")
    scan = scan_dataset(tmp_path)
    assert len(scan.records) == 18
    assert [(issue.reason, issue.path.rsplit("/", 1)[1]) for issue in scan.skipped] == [("missing", "absent.jpg")]
    split = split_scan(scan, seed=1)
    assert split.classes == ["cat", "dog", "fish"]
    assert sum(split.report["totals"].values()) == 18


def test_manifest_split_column_is_kept(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    files = sorted(root.rglob("*.*"))
    lines = ["path,label,split"] + [
        f"{p},{p.parent.name},{'valid' if i % 3 == 0 else 'train'}" for i, p in enumerate(files)
    ]
    manifest = tmp_path / "export.csv"
    manifest.write_text("\n".join(lines) + "\n")
    split = split_scan(scan_dataset(manifest), seed=1)
    assert split.report["already_split"] is True
    assert split.report["totals"]["val"] == 6
    assert split.report["totals"]["train"] == 12


def test_manifest_without_label_column_is_rejected(tmp_path):
    (tmp_path / "manifest.csv").write_text("path,class\na.png,cat\n")
    with pytest.raises(DatasetError, match=r"manifest\.csv: missing column\(s\) label"):
        scan_dataset(tmp_path)


def test_scan_ignores_fifo_and_broken_symlink(tmp_path):
    import os

    root = make_dataset(tmp_path / "photos", per_class=3)
    os.mkfifo(root / "cat" / "pipe.jpg")
    os.symlink(tmp_path / "nowhere.jpg", root / "dog" / "dangling.jpg")
    scan = scan_dataset(root)
    reasons = {issue.path.rsplit("/", 1)[1]: issue.detail for issue in scan.ignored}
    assert reasons["pipe.jpg"] == "named pipe (FIFO), not a regular file"
    assert reasons["dangling.jpg"] == "broken symbolic link"
    assert len(scan.records) == 9


def test_scan_reports_symlinked_folder_inside_class(tmp_path):
    import os

    root = make_dataset(tmp_path / "photos", per_class=3)
    make_dataset(tmp_path / "elsewhere", per_class=2, classes={"extra": (9, 9, 9)}, first_seed=50)
    os.symlink(tmp_path / "elsewhere" / "extra", root / "cat" / "more")
    scan = scan_dataset(root)
    assert [issue.reason for issue in scan.ignored] == ["symlinked_folder"]
    assert len(scan.records) == 9
