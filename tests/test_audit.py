import json
import shutil

from typer.testing import CliRunner

from conftest import make_dataset
from imgclf.audit import audit_dataset
from imgclf.audit_html import render_html
from imgclf.cli.main import app
from imgclf.scan import scan_dataset
from imgclf.splitting import split_scan, write_split

runner = CliRunner()


def _split_folder(tmp_path, root):
    return write_split(split_scan(scan_dataset(root), seed=1), tmp_path / "split")


def test_audit_counts_classes_and_imbalance(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    make_dataset(root, per_class=8, classes={"owl": (128, 128, 128)}, first_seed=1000)
    report = audit_dataset(root)
    assert report["classes"] == {"cat": 4, "dog": 4, "fish": 4, "owl": 8}
    assert report["imbalance_ratio"] == 2.0
    assert report["failures"] == {"leakage": 0, "label_conflicts": 0, "unreadable": 0}


def test_audit_finds_leakage_in_split_folder(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6)
    folder = _split_folder(tmp_path, root)
    test_path = (folder / "test.csv").read_text().splitlines()[1].split(",")[0]
    leaked = root / "cat" / "leaked_copy.png"
    shutil.copy(test_path, leaked)
    with open(folder / "train.csv", "a") as handle:
        handle.write(f"{leaked},{test_path.split('/')[-2]}\n")
    report = audit_dataset(folder)
    assert report["failures"]["leakage"] == 1
    assert sorted(report["leakage"][0]["splits"]) == ["test", "train"]


def test_audit_finds_label_conflict(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    shutil.copy(root / "cat" / "cat_0.jpg", root / "dog" / "which_one.jpg")
    report = audit_dataset(root)
    assert report["failures"]["label_conflicts"] == 1
    assert sorted(report["label_conflicts"][0]["labels"]) == ["cat", "dog"]


def test_audit_lists_unreadable_small_and_odd_images(tmp_path):
    from conftest import make_image

    root = make_dataset(tmp_path / "photos", per_class=3, size=(40, 40))
    (root / "cat" / "broken.jpg").write_bytes(b"")
    make_image(root / "dog" / "tiny.png", (1, 2, 3), size=(10, 10))
    make_image(root / "dog" / "banner.png", (1, 2, 3), size=(200, 40))
    report = audit_dataset(root, image_size=(32, 32), max_aspect=3.0)
    assert [issue["reason"] for issue in report["unreadable"]] == ["empty"]
    assert [item["path"].rsplit("/", 1)[1] for item in report["small_images"]] == ["tiny.png"]
    assert [item["aspect_ratio"] for item in report["unusual_aspect_ratios"]] == [5.0]


def test_audit_second_run_reads_hashes_from_cache(tmp_path, monkeypatch):
    import imgclf.scan as scan_module

    root = make_dataset(tmp_path / "photos", per_class=3)
    first = audit_dataset(root)
    calls = []
    monkeypatch.setattr(scan_module, "verify_image", lambda *args: calls.append(args))
    second = audit_dataset(root)
    assert calls == []
    assert second["classes"] == first["classes"]


def test_check_strict_exits_with_dataset_code(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    shutil.copy(root / "cat" / "cat_0.jpg", root / "dog" / "which_one.jpg")
    result = runner.invoke(app, ["check", str(root), "--strict"])
    assert result.exit_code == 4
    assert "1 groups with conflicting labels" in result.output


def test_check_without_strict_succeeds_and_prints_json(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=4)
    (root / "cat" / "broken.jpg").write_bytes(b"")
    result = runner.invoke(app, ["check", str(root), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["failures"]["unreadable"] == 1


def test_check_html_embeds_thumbnails_and_escapes_paths(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3, classes={"<b>cat</b>": (200, 0, 0), "dog": (0, 0, 200)})
    shutil.copy(root / "dog" / "dog_0.jpg", root / "dog" / "copy.jpg")
    html_path = tmp_path / "report.html"
    result = runner.invoke(app, ["check", str(root), "--html", str(html_path)])
    assert result.exit_code == 0, result.output
    page = html_path.read_text()
    assert "data:image/jpeg;base64," in page
    assert "<b>cat</b>" not in page
    assert "&lt;b&gt;cat&lt;/b&gt;" in page


def test_render_html_marks_strict_failures(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3)
    (root / "cat" / "broken.jpg").write_bytes(b"")
    page = render_html(audit_dataset(root))
    assert 'class="fail"' in page
