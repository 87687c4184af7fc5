"""What the CLI prints when its inputs are awkward: OS errors, markup-like names, long names,
out-of-range options, early path checks, and the predict, augment and datasets edge cases."""

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import REPO_ROOT, make_dataset, make_image, write_config
from imgclf.cli.common import DEBUG, OS_ERROR_EXIT_CODE
from imgclf.cli.main import app

runner = CliRunner()

LONG_CLASSES = {
    "very_long_prefix_specimen_collected_in_the_northern_greenhouse_A": (220, 40, 40),
    "very_long_prefix_specimen_collected_in_the_northern_greenhouse_B": (40, 220, 40),
}


@pytest.fixture(autouse=True)
def _debug_off(monkeypatch):
    """`--debug` sets a process-wide flag; keep one test's flag from leaking into the next."""
    monkeypatch.setitem(DEBUG, "enabled", False)


def _first_column_text(table_output: str) -> str:
    """The text of a Rich table's first column, with folded cells joined back together."""
    cells = [line.split("│")[1].strip() for line in table_output.splitlines() if line.count("│") > 2]
    return "".join(cells)


def _tensorflow_imported_after(args: list[str]) -> tuple[int, bool]:
    """Run `imgclf ARGS` in a fresh interpreter; return its exit code and whether TensorFlow was imported."""
    code = (
        "import sys\n"
        "from imgclf.cli.main import app\n"
        "try:\n"
        f"    app({args!r})\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'tensorflow' in sys.modules)\n"
    )
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    exit_code, imported = completed.stdout.strip().splitlines()[-1].split()
    return int(exit_code), imported == "True"


# OS errors: one line naming the path, the reason and the fix, with their own exit code.


def test_split_out_under_file_exits_with_os_code(dataset, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["split", str(dataset), "--out", str(blocker / "split")])
    assert result.exit_code == OS_ERROR_EXIT_CODE
    assert f"error: {blocker / 'split'}: Not a directory;" in result.stderr
    assert "check that every parent of this path is a folder" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_split_out_read_only_exits_with_os_code(dataset, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = runner.invoke(app, ["split", str(dataset), "--out", str(locked / "split")])
    finally:
        locked.chmod(0o700)
    assert result.exit_code == OS_ERROR_EXIT_CODE
    assert f"{locked / 'split'}: Permission denied;" in result.stderr


def test_os_error_line_for_permission_denied():
    from imgclf.cli.common import describe_os_error

    line = describe_os_error(PermissionError(errno.EACCES, "Permission denied", "/data/out"))
    assert line == "/data/out: Permission denied; check the permissions of the path and its folder"


def test_os_error_line_without_path():
    from imgclf.cli.common import DEFAULT_OS_ERROR_FIX, describe_os_error

    line = describe_os_error(OSError(errno.EIO, "Input/output error"))
    assert line == f"Input/output error; {DEFAULT_OS_ERROR_FIX}"


def test_debug_flag_adds_os_error_traceback(dataset, tmp_path):
    blocker = tmp_path / "afile"
    blocker.write_text("not a folder")
    result = runner.invoke(app, ["--debug", "split", str(dataset), "--out", str(blocker / "split")])
    assert result.exit_code == OS_ERROR_EXIT_CODE
    assert "NotADirectoryError" in result.stderr
    assert "Traceback" in result.stderr


def test_readme_lists_os_error_exit_code():
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    assert f"{OS_ERROR_EXIT_CODE} operating-system error" in readme


# Names that look like Rich markup are printed as they are.


def test_split_shows_bracketed_class_name_verbatim(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6, classes={"[draft] cats": (220, 40, 40), "[red]": (40, 220, 40)})
    result = runner.invoke(app, ["split", str(root), "--out", str(tmp_path / "split")])
    assert result.exit_code == 0, result.output
    assert "[draft] cats" in result.stdout
    assert "[red]" in result.stdout


def test_split_missing_path_with_closing_tag_names_it(tmp_path):
    missing = str(tmp_path / "nowhere[/]")
    result = runner.invoke(app, ["split", missing, "--out", str(tmp_path / "x")])
    assert result.exit_code == 4
    assert f"{missing}: dataset folder not found" in result.stderr


def test_check_shows_bracketed_class_name_verbatim(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=3, classes={"[bold]x[/]": (220, 40, 40), "dogs": (40, 220, 40)})
    result = runner.invoke(app, ["check", str(root)])
    assert result.exit_code == 0, result.output
    assert "[bold]x[/]" in result.stdout


def test_evaluate_missing_run_with_markup_name_names_it(tmp_path):
    missing = str(tmp_path / "[red]run")
    result = runner.invoke(app, ["evaluate", missing])
    assert result.exit_code == 6
    assert f"{missing}: not a finished run directory" in result.stderr


# Long names fold instead of being cut to the same "…" prefix.


def test_split_table_folds_long_class_names(tmp_path):
    root = make_dataset(tmp_path / "photos", per_class=6, classes=LONG_CLASSES)
    result = runner.invoke(app, ["split", str(root), "--out", str(tmp_path / "split")])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    first_column = _first_column_text(result.stdout)
    for name in LONG_CLASSES:
        assert name in first_column


def test_check_table_folds_long_class_names(tmp_path):
    # check's table has one number column, so only names wider than an 80-column line overflow.
    classes = {name * 2: colour for name, colour in LONG_CLASSES.items()}
    root = make_dataset(tmp_path / "photos", per_class=3, classes=classes)
    result = runner.invoke(app, ["check", str(root)])
    assert result.exit_code == 0, result.output
    assert "…" not in result.stdout
    first_column = _first_column_text(result.stdout)
    for name in classes:
        assert name in first_column


# Option ranges and --out placement.


def test_split_rejects_negative_seed(dataset, tmp_path):
    result = runner.invoke(app, ["split", str(dataset), "--out", str(tmp_path / "s"), "--seed", "-1"])
    assert result.exit_code == 2
    assert "--seed" in result.output


@pytest.mark.parametrize("args", [
    ["split", "photos", "--out", "s"],
    ["check", "photos"],
    ["import", "csv", "labels.csv", "--out", "s"],
    ["predict", "run", "photos"],
], ids=lambda args: args[0])
def test_max_image_pixels_rejects_zero(args):
    result = runner.invoke(app, args + ["--max-image-pixels", "0"])
    assert result.exit_code == 2
    assert "--max-image-pixels" in result.output


def test_split_rejects_out_inside_source(dataset):
    out = dataset / "split"
    result = runner.invoke(app, ["split", str(dataset), "--out", str(out)])
    assert result.exit_code == 3
    assert f"--out {out}: inside the dataset folder {dataset}" in result.stderr
    assert not out.exists()


def test_split_rejects_out_equal_to_source(dataset):
    result = runner.invoke(app, ["split", str(dataset), "--out", str(dataset)])
    assert result.exit_code == 3
    assert "inside the dataset folder" in result.stderr


# Mistyped paths fail before TensorFlow is imported.


def test_evaluate_missing_run_skips_tensorflow(tmp_path):
    exit_code, imported = _tensorflow_imported_after(["evaluate", str(tmp_path / "no-run")])
    assert exit_code == 6
    assert not imported


def test_evaluate_unknown_split_skips_tensorflow(tmp_path):
    exit_code, imported = _tensorflow_imported_after(["evaluate", str(tmp_path), "--split", "tset"])
    assert exit_code == 4
    assert not imported


def test_predict_missing_model_skips_tensorflow(tmp_path):
    image = make_image(tmp_path / "a.png", (1, 2, 3))
    exit_code, imported = _tensorflow_imported_after(["predict", str(tmp_path / "no-model"), str(image)])
    assert exit_code == 6
    assert not imported


def test_augment_missing_data_path_skips_tensorflow(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "no-photos", tmp_path / "runs")
    exit_code, imported = _tensorflow_imported_after(
        ["augment", "--config", str(config), "--preview", str(tmp_path / "grid.png")])
    assert exit_code == 4
    assert not imported


def test_train_missing_data_path_skips_tensorflow(tmp_path):
    config = write_config(tmp_path / "c.yaml", tmp_path / "no-photos", tmp_path / "runs")
    exit_code, imported = _tensorflow_imported_after(["train", "--config", str(config)])
    assert exit_code == 4
    assert not imported


def test_train_missing_data_path_names_it(tmp_path):
    missing = tmp_path / "no-photos"
    config = write_config(tmp_path / "c.yaml", missing, tmp_path / "runs")
    result = runner.invoke(app, ["train", "--config", str(config)])
    assert result.exit_code == 4
    assert f"data.path {str(missing)!r}: not found" in result.stderr
    assert not (tmp_path / "runs").exists()


# predict: literal paths, empty folders, non-image files and the closing message.


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """A finished run directory for a 16x16 small CNN on three colour classes."""
    from tiny_run import make_run

    root = tmp_path_factory.mktemp("predict")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("IMGCLF_CACHE_DIR", str(root / "cache"))
        return make_run(root)


@pytest.fixture
def fake_run(tmp_path):
    """A folder that `resolve_model` accepts without loading anything: enough for the input checks."""
    run = tmp_path / "fake-run"
    run.mkdir()
    (run / "model.keras").write_bytes(b"")
    (run / "classes.json").write_text(json.dumps(["cat", "dog"]), "utf-8")
    return run


def test_predict_empty_folder_is_dataset_error(fake_run, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = runner.invoke(app, ["predict", str(fake_run), str(empty)])
    assert result.exit_code == 4
    assert f"no files found under {empty}" in result.stderr


def test_predict_folder_of_text_files_is_dataset_error(fake_run, tmp_path):
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "readme.txt").write_text("not an image")
    result = runner.invoke(app, ["predict", str(fake_run), str(notes)])
    assert result.exit_code == 4
    assert f"no image files found under {notes}" in result.stderr


def test_predict_takes_existing_bracket_path_literally(tiny_run, tmp_path):
    image = make_image(tmp_path / "batch[1]" / "photo[1].png", (220, 40, 40))
    make_image(tmp_path / "batch1" / "photo1.png", (40, 220, 40))
    result = runner.invoke(app, ["predict", str(tiny_run), str(image), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [record["path"] for record in records] == [str(image)]


def test_predict_folder_ignores_non_image_files(tiny_run, tmp_path):
    folder = tmp_path / "inbox"
    image = make_image(folder / "photo.png", (220, 40, 40))
    (folder / "notes.txt").write_text("not an image")
    (folder / "labels.csv").write_text("a,b\n")
    result = runner.invoke(app, ["predict", str(tiny_run), str(folder), "--json", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["path"] for line in result.stdout.splitlines()] == [str(image)]
    assert "ignored 2 non-image files" in result.stderr


def test_predict_named_text_file_still_fails(tiny_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    result = runner.invoke(app, ["predict", str(tiny_run), str(notes), "--no-progress"])
    assert result.exit_code == 5
    assert "see the error lines above" in result.stderr


def test_predict_json_failure_points_to_stdout(tiny_run, tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("not an image")
    result = runner.invoke(app, ["predict", str(tiny_run), str(notes), "--json", "--no-progress"])
    assert result.exit_code == 5
    assert "see the error records on stdout" in result.stderr
    assert "lines above" not in result.stderr


def test_predict_too_many_pixels_names_option(tiny_run, tmp_path):
    image = make_image(tmp_path / "big.png", (220, 40, 40), size=(40, 40))
    result = runner.invoke(app, ["predict", str(tiny_run), str(image), "--max-image-pixels", "100", "--no-progress"])
    assert result.exit_code == 5
    assert "raise --max-image-pixels" in result.stderr
    assert "data.max_image_pixels" not in result.stderr


# augment --preview.


def test_augment_rejects_preview_without_png_suffix(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    result = runner.invoke(app, ["augment", "--config", str(config), "--preview", str(tmp_path / "grid.jpg")])
    assert result.exit_code == 3
    assert "--preview must name a .png file" in result.stderr


def test_augment_rejects_preview_folder(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    folder = tmp_path / "previews.png"
    folder.mkdir()
    result = runner.invoke(app, ["augment", "--config", str(config), "--preview", str(folder)])
    assert result.exit_code == 3
    assert f"--preview {folder}: a folder, not a file" in result.stderr


def test_augment_all_off_warns_and_names_file(dataset, tmp_path):
    config = write_config(tmp_path / "c.yaml", dataset, tmp_path / "runs")
    preview = tmp_path / "grid.png"
    result = runner.invoke(app, ["augment", "--config", str(config), "--preview", str(preview),
                                 "--images", "2", "--variants", "2"])
    assert result.exit_code == 0, result.output
    assert "each variant equals the original" in result.stderr
    assert f"wrote {preview.resolve()}:" in result.stderr
    assert preview.is_file()


@pytest.mark.parametrize("as_folder", [False, True], ids=["csv-file", "folder"])
def test_augment_previews_manifest_data_path(tmp_path, as_folder):
    photos = make_dataset(tmp_path / "photos", per_class=2)
    manifest = tmp_path / "import" / "manifest.csv"
    manifest.parent.mkdir()
    rows = [f"{path.relative_to(tmp_path)},{path.parent.name}" for path in sorted(photos.rglob("*.*"))]
    manifest.write_text("path,label\n" + "\n".join(f"../{row}" for row in rows) + "\n", "utf-8")
    data_path = manifest.parent if as_folder else manifest
    config = write_config(tmp_path / "c.yaml", data_path, tmp_path / "runs", augmentation={"horizontal_flip": True})
    preview = tmp_path / "grid.png"
    result = runner.invoke(app, ["augment", "--config", str(config), "--preview", str(preview),
                                 "--images", "3", "--variants", "2"])
    assert result.exit_code == 0, result.output
    assert ": 3 images x 2 augmented versions" in result.stderr
    assert preview.is_file()


# datasets export.


def test_datasets_export_digits_rejects_from(tmp_path):
    result = runner.invoke(app, ["datasets", "export", "digits", str(tmp_path / "digits"), "--from", str(tmp_path)])
    assert result.exit_code == 3
    assert f"--from {tmp_path}: only fashion-mnist reads files from a folder" in result.stderr
    assert not (tmp_path / "digits").exists()


# README.


def test_readme_captures_run_without_pipe():
    readme = (REPO_ROOT / "README.md").read_text("utf-8")
    assert "RUN=$(imgclf train --config c.yaml)" in readme
    assert "tail -n 1" not in readme
