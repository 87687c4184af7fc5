import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import make_image
from imgclf.cli.main import app
from imgclf.errors import DatasetError
from imgclf.importers import Box, ImportOptions, class_folder_names, crop_bounds, import_annotations

runner = CliRunner()
RED, GREEN, BLUE = (220, 40, 40), (40, 220, 40), (40, 40, 220)


# ---------------------------------------------------------------------------------------
# Helpers


def read_manifest(out: Path) -> list[dict]:
    with open(out / "manifest.csv", newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def read_report(out: Path) -> dict:
    return json.loads((out / "import_report.json").read_text("utf-8"))


def read_classes(out: Path) -> list[str]:
    return json.loads((out / "classes.json").read_text("utf-8"))


def reasons_by_path(report: dict) -> dict[str, str]:
    return {issue["path"]: issue["reason"] for issue in report["not_imported"]}


def reasons_by_item(report: dict) -> dict[str, str]:
    return {issue["item"]: issue["reason"] for issue in report["not_imported"]}


def write_csv(path: Path, rows: list[list[str]], header=("path", "label")) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def write_cvat(path: Path, images: list[tuple[str, list[str]]], prolog: str = "") -> Path:
    elements = []
    for index, (name, labels) in enumerate(images):
        tags = "".join(f'<tag label="{label}" source="manual"/>' for label in labels)
        elements.append(f'<image id="{index}" name="{name}" width="16" height="16">{tags}</image>')
    text = (f'<?xml version="1.0" encoding="utf-8"?>\n{prolog}<annotations><version>1.1</version>'
            f'{"".join(elements)}</annotations>')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, "utf-8")
    return path


def write_voc(path: Path, filename: str, objects: list[tuple[str, tuple]], size=(40, 30)) -> Path:
    parts = [f"<annotation><folder>x</folder><filename>{filename}</filename><path>/home/someone/{filename}</path>",
             f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"]
    for name, (xmin, ymin, xmax, ymax) in objects:
        parts.append(f"<object><name>{name}</name><bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin>"
                     f"<xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>")
    parts.append("</annotation>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(parts), "utf-8")
    return path


def ls_task(task_id: int, url: str, *choice_lists, cancelled=False) -> dict:
    annotations = [
        {"id": task_id * 10 + index, "was_cancelled": cancelled,
         "result": [{"type": "choices", "from_name": "choice", "to_name": "image", "value": {"choices": choices}}]}
        for index, choices in enumerate(choice_lists)
    ]
    return {"id": task_id, "data": {"image": url}, "annotations": annotations, "predictions": []}


@pytest.fixture
def csv_export(tmp_path: Path) -> Path:
    """A CSV export: two cats, one dog, paths relative to the CSV's folder."""
    export = tmp_path / "export"
    make_image(export / "img" / "c1.png", RED, seed=1)
    make_image(export / "img" / "c2.png", RED, seed=2)
    make_image(export / "img" / "d1.png", GREEN, seed=3)
    return write_csv(export / "labels.csv", [["img/c1.png", "cat"], ["img/c2.png", "cat"], ["img/d1.png", "dog"]])


# ---------------------------------------------------------------------------------------
# CSV


def test_csv_import_writes_manifest_classes_and_report(csv_export, tmp_path):
    out = tmp_path / "out"
    result = import_annotations("csv", csv_export, out)

    rows = read_manifest(out)
    assert [row["label"] for row in rows] == ["cat", "cat", "dog"]
    assert rows[0]["path"] == str((csv_export.parent / "img" / "c1.png").resolve())
    assert all(os.path.isabs(row["path"]) for row in rows)
    assert list(rows[0]) == ["path", "label"]
    assert read_classes(out) == ["cat", "dog"]
    report = read_report(out)
    assert report["format"] == "csv"
    assert report["source"] == str(csv_export.resolve())
    assert report["counts"] == {"cat": 2, "dog": 1}
    assert report["n_not_imported"] == 0
    assert result.classes == ["cat", "dog"]


def test_csv_custom_columns(tmp_path):
    make_image(tmp_path / "a.png", RED)
    source = write_csv(tmp_path / "export.csv", [["a.png", "x", "cat"]], header=("file", "note", "class"))
    options = ImportOptions(path_column="file", label_column="class")

    import_annotations("csv", source, tmp_path / "out", options)

    assert read_manifest(tmp_path / "out")[0]["label"] == "cat"


def test_csv_missing_column_names_columns_found(tmp_path):
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"]], header=("file", "label"))

    with pytest.raises(DatasetError, match=r"missing column\(s\) 'path' \(found 'file', 'label'\)"):
        import_annotations("csv", source, tmp_path / "out")


def test_csv_semicolon_header_gets_separator_hint(tmp_path):
    source = tmp_path / "export.csv"
    source.write_text("path;label\na.png;cat\n", "utf-8")

    with pytest.raises(DatasetError, match="must be comma-separated"):
        import_annotations("csv", source, tmp_path / "out")


def test_csv_not_utf8_raises_naming_file(tmp_path):
    source = tmp_path / "export.csv"
    source.write_bytes(b"path,label\nb\xe4r.png,cat\n")

    with pytest.raises(DatasetError, match=r"export\.csv: not UTF-8"):
        import_annotations("csv", source, tmp_path / "out")


def test_csv_oversized_field_raises_naming_line(tmp_path):
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"], ["x" * 200_000, "cat"]])

    with pytest.raises(DatasetError, match=r"export\.csv, after line 2: invalid CSV \(field larger than field limit"):
        import_annotations("csv", source, tmp_path / "out")


def test_csv_images_root_option(tmp_path):
    make_image(tmp_path / "photos" / "a.png", RED)
    make_image(tmp_path / "photos" / "b.png", GREEN, seed=1)
    source = write_csv(tmp_path / "meta" / "export.csv", [["a.png", "cat"], ["b.png", "dog"]])

    import_annotations("csv", source, tmp_path / "out", ImportOptions(images_root=tmp_path / "photos"))

    assert read_classes(tmp_path / "out") == ["cat", "dog"]


def test_csv_reports_missing_file_empty_label_and_path(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    make_image(tmp_path / "c.png", BLUE, seed=2)
    source = write_csv(tmp_path / "export.csv",
                       [["a.png", "cat"], ["gone.png", "cat"], ["b.png", "   "], ["", "dog"], ["c.png", "dog"]])

    import_annotations("csv", source, tmp_path / "out")

    report = read_report(tmp_path / "out")
    by_item = reasons_by_item(report)
    assert by_item["export.csv line 3"] == "missing"
    assert by_item["export.csv line 4"] == "no_label"
    assert by_item["export.csv line 5"] == "no_path"
    assert report["n_imported"] == 2
    assert report["n_items"] == 5


def test_csv_every_item_is_imported_or_reported(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    (tmp_path / "root" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    source = write_csv(tmp_path / "root" / "export.csv",
                       [["a.png", "cat"], ["broken.png", "cat"], ["../x.png", "cat"], ["nope.png", ""]])

    import_annotations("csv", source, tmp_path / "out")

    report = read_report(tmp_path / "out")
    assert report["n_items"] == 4
    assert report["n_imported"] + report["n_not_imported"] == report["n_items"]
    assert len(read_manifest(tmp_path / "out")) == report["n_imported"]


def test_csv_parent_escape_is_outside_root(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    (tmp_path / "secret.png").write_bytes(b"not an image")
    source = write_csv(tmp_path / "root" / "export.csv", [["a.png", "cat"], ["../secret.png", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    # Reading the file would have given not_an_image: outside_root shows it was never opened.
    assert reasons_by_path(read_report(tmp_path / "out")) == {"../secret.png": "outside_root"}


def test_csv_dotdot_inside_root_is_accepted(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    (tmp_path / "root" / "sub").mkdir()
    source = write_csv(tmp_path / "root" / "export.csv", [["sub/../a.png", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    assert read_manifest(tmp_path / "out")[0]["path"] == str((tmp_path / "root" / "a.png").resolve())


def test_csv_absolute_path_outside_root(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    outside = make_image(tmp_path / "elsewhere" / "b.png", GREEN, seed=1)
    source = write_csv(tmp_path / "root" / "export.csv", [["a.png", "cat"], [str(outside), "dog"]])

    import_annotations("csv", source, tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out")) == {str(outside): "outside_root"}


def test_csv_absolute_path_inside_root_is_accepted(tmp_path):
    inside = make_image(tmp_path / "root" / "a.png", RED)
    source = write_csv(tmp_path / "root" / "export.csv", [[str(inside.resolve()), "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    assert read_manifest(tmp_path / "out")[0]["path"] == str(inside.resolve())


def test_csv_symlink_escape_is_outside_root(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    outside = make_image(tmp_path / "elsewhere" / "b.png", GREEN, seed=1)
    (tmp_path / "root" / "link.png").symlink_to(outside)
    (tmp_path / "root" / "linked_dir").symlink_to(outside.parent, target_is_directory=True)
    source = write_csv(tmp_path / "root" / "export.csv",
                       [["a.png", "cat"], ["link.png", "dog"], ["linked_dir/b.png", "dog"]])

    import_annotations("csv", source, tmp_path / "out")

    reasons = reasons_by_path(read_report(tmp_path / "out"))
    assert reasons["link.png"] == "outside_root"
    assert reasons["linked_dir/b.png"] == "outside_root"


def test_csv_symlink_inside_root_is_followed(tmp_path):
    target = make_image(tmp_path / "root" / "store" / "a.png", RED)
    (tmp_path / "root" / "alias.png").symlink_to(target)
    source = write_csv(tmp_path / "root" / "export.csv", [["alias.png", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    assert read_manifest(tmp_path / "out")[0]["path"] == str(target.resolve())


@pytest.mark.parametrize(
    ("content", "reason"),
    [(b"", "empty"), (b"plain text, no image", "not_an_image")],
    ids=["empty", "not_an_image"],
)
def test_csv_undecodable_image_reports_image_error_reason(tmp_path, content, reason):
    make_image(tmp_path / "a.png", RED)
    (tmp_path / "bad.jpg").write_bytes(content)
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"], ["bad.jpg", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out")) == {"bad.jpg": reason}


def test_csv_truncated_image_is_reported(tmp_path):
    make_image(tmp_path / "a.png", RED)
    whole = make_image(tmp_path / "whole.png", GREEN, size=(64, 64), seed=1).read_bytes()
    (tmp_path / "cut.png").write_bytes(whole[: len(whole) // 2])
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"], ["cut.png", "dog"]])

    import_annotations("csv", source, tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out"))["cut.png"] in {"truncated", "corrupt"}


def test_csv_folder_path_is_not_a_file(tmp_path):
    make_image(tmp_path / "a.png", RED)
    (tmp_path / "folder.png").mkdir()
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"], ["folder.png", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out")) == {"folder.png": "not_a_file"}


def test_csv_duplicate_and_label_conflict(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    source = write_csv(tmp_path / "export.csv",
                       [["a.png", "cat"], ["./a.png", "cat"], ["b.png", "dog"], ["b.png", "cat"]])

    import_annotations("csv", source, tmp_path / "out")

    report = read_report(tmp_path / "out")
    by_item = reasons_by_item(report)
    assert by_item["export.csv line 3"] == "duplicate"
    assert by_item["export.csv line 4"] == "label_conflict"
    assert by_item["export.csv line 5"] == "label_conflict"
    assert [row["path"] for row in read_manifest(tmp_path / "out")] == [str((tmp_path / "a.png").resolve())]


def test_csv_unicode_labels_round_trip(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    make_image(tmp_path / "c.png", BLUE, seed=2)
    source = write_csv(tmp_path / "export.csv",
                       [["a.png", "  蒲公英 "], ["b.png", "Löwenzahn"], ["c.png", "Ähre"]])

    import_annotations("csv", source, tmp_path / "out")

    # Code point order, not locale order: 'L' (U+004C) < 'Ä' (U+00C4) < '蒲' (U+84B2).
    assert read_classes(tmp_path / "out") == ["Löwenzahn", "Ähre", "蒲公英"]
    labels = {Path(row["path"]).name: row["label"] for row in read_manifest(tmp_path / "out")}
    assert labels == {"a.png": "蒲公英", "b.png": "Löwenzahn", "c.png": "Ähre"}
    assert "蒲公英" in (tmp_path / "out" / "classes.json").read_text("utf-8")


def test_csv_copy_writes_images_under_label_folders(tmp_path):
    make_image(tmp_path / "x" / "a.png", RED)
    make_image(tmp_path / "y" / "a.png", RED, seed=1)
    make_image(tmp_path / "b.png", GREEN, seed=2)
    source = write_csv(tmp_path / "export.csv", [["x/a.png", "Löwenzahn"], ["y/a.png", "Löwenzahn"], ["b.png", "dog"]])
    out = tmp_path / "out"

    import_annotations("csv", source, out, ImportOptions(copy_images=True))

    paths = sorted(row["path"] for row in read_manifest(out))
    assert paths == sorted([str(out / "images" / "Löwenzahn" / "a.png"), str(out / "images" / "Löwenzahn" / "a-2.png"),
                            str(out / "images" / "dog" / "b.png")])
    assert all(Path(path).is_file() for path in paths)
    assert (out / "images" / "dog" / "b.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_csv_copy_keeps_unsafe_label_inside_out(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    source = write_csv(tmp_path / "export.csv", [["a.png", "../../escape"], ["b.png", "dog"]])
    out = tmp_path / "out"

    import_annotations("csv", source, out, ImportOptions(copy_images=True))

    rows = read_manifest(out)
    assert {row["label"] for row in rows} == {"../../escape", "dog"}
    assert all(Path(row["path"]).resolve().is_relative_to(out.resolve()) for row in rows)
    assert read_report(out)["class_folders"]["../../escape"] == "_._.._escape"


def test_import_rejects_non_empty_out(csv_export, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("x")

    with pytest.raises(DatasetError, match=r"--out .*out: already exists and is not an empty folder"):
        import_annotations("csv", csv_export, out)


def test_import_with_nothing_imported_raises_after_writing_report(tmp_path):
    source = write_csv(tmp_path / "export.csv", [["gone.png", "cat"]])
    out = tmp_path / "out"

    with pytest.raises(DatasetError, match=r"no image imported \(1 missing\)"):
        import_annotations("csv", source, out)

    assert read_report(out)["not_imported"][0]["reason"] == "missing"


def test_import_missing_export_raises(tmp_path):
    with pytest.raises(DatasetError, match=r"absent\.csv: export not found"):
        import_annotations("csv", tmp_path / "absent.csv", tmp_path / "out")


def test_import_unknown_format_lists_choices(tmp_path):
    with pytest.raises(DatasetError, match=r"format 'coco' is not supported; choose one of csv, cvat"):
        import_annotations("coco", tmp_path, tmp_path / "out")


# ---------------------------------------------------------------------------------------
# CVAT


def test_cvat_import_reads_tags(tmp_path):
    make_image(tmp_path / "task" / "images" / "cats" / "1.png", RED)
    make_image(tmp_path / "task" / "images" / "2.png", GREEN, seed=1)
    source = write_cvat(tmp_path / "task" / "annotations.xml", [("cats/1.png", ["cat"]), ("2.png", ["dog", "dog"])])

    import_annotations("cvat", source, tmp_path / "out")

    rows = read_manifest(tmp_path / "out")
    assert [(Path(row["path"]).name, row["label"]) for row in rows] == [("2.png", "dog"), ("1.png", "cat")]
    assert read_classes(tmp_path / "out") == ["cat", "dog"]


def test_cvat_reports_no_label_and_several_labels(tmp_path):
    for index in range(3):
        make_image(tmp_path / f"{index}.png", RED, seed=index)
    source = write_cvat(tmp_path / "annotations.xml",
                        [("0.png", ["cat"]), ("1.png", []), ("2.png", ["cat", "dog"])])

    import_annotations("cvat", source, tmp_path / "out")

    by_item = reasons_by_item(read_report(tmp_path / "out"))
    assert by_item == {"image id 1": "no_label", "image id 2": "several_labels"}


def test_cvat_rejects_doctype_entities(tmp_path):
    prolog = '<!DOCTYPE lol [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
    source = write_cvat(tmp_path / "annotations.xml", [("&lol2;.png", ["cat"])], prolog=prolog)

    with pytest.raises(DatasetError, match="annotations.xml: contains a DOCTYPE declaration"):
        import_annotations("cvat", source, tmp_path / "out")


def test_cvat_invalid_xml_names_file_and_format(tmp_path):
    source = tmp_path / "annotations.xml"
    source.write_text("<annotations><image", "utf-8")

    with pytest.raises(DatasetError, match=r"annotations\.xml: invalid XML .*CVAT for images 1\.1"):
        import_annotations("cvat", source, tmp_path / "out")


def test_cvat_wrong_root_element(tmp_path):
    source = write_voc(tmp_path / "a.xml", "a.png", [])

    with pytest.raises(DatasetError, match="the root element is <annotation>; expected"):
        import_annotations("cvat", source, tmp_path / "out")


# ---------------------------------------------------------------------------------------
# Label Studio


def test_label_studio_maps_media_urls(tmp_path):
    media = tmp_path / "media"
    make_image(media / "photo.jpg", RED, fmt="JPEG")
    make_image(media / "1a2b3c4d-kept.png", GREEN, seed=1)
    make_image(media / "dir" / "local.png", BLUE, seed=2)
    tasks = [
        ls_task(1, "/data/upload/1/0f0f0f0f-photo.jpg", ["cat"]),
        ls_task(2, "http://localhost:8080/data/upload/1/1a2b3c4d-kept.png", ["dog"], ["dog"]),
        ls_task(3, "/data/local-files/?d=dir%2Flocal.png", ["Löwenzahn"]),
    ]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out", ImportOptions(images_root=media))

    rows = {Path(row["path"]).name: row["label"] for row in read_manifest(tmp_path / "out")}
    assert rows == {"photo.jpg": "cat", "1a2b3c4d-kept.png": "dog", "local.png": "Löwenzahn"}


def test_label_studio_json_reports_each_reason(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    make_image(tmp_path / "c.png", BLUE, seed=2)
    tasks = [
        ls_task(1, "a.png", ["cat"]),
        ls_task(2, "b.png", ["cat"], ["dog"]),
        ls_task(3, "c.png", ["cat"], cancelled=True),
        ls_task(4, "https://example.com/d.png", ["cat"]),
        {"id": 5, "data": {"img": "a.png"}, "annotations": []},
        ls_task(6, "/data/local-files/?d=../outside.png", ["cat"]),
        ls_task(7, "/data/upload/1/abcdef12-gone.png", ["cat"]),
    ]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out")

    report = read_report(tmp_path / "out")
    by_item = reasons_by_item(report)
    assert by_item["task 2"] == "several_labels"
    assert by_item["task 3"] == "no_label"
    assert by_item["task 4"] == "unsupported_url"
    assert by_item["task 5"] == "no_path"
    assert by_item["task 6"] == "outside_root"
    assert by_item["task 7"] == "missing"
    assert report["n_imported"] == 1


def test_label_studio_nul_in_path_is_invalid_path(tmp_path):
    make_image(tmp_path / "a.png", RED)
    tasks = [ls_task(1, "a.png", ["cat"]), ls_task(2, "b\u0000.png", ["cat"])]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out")

    assert reasons_by_item(read_report(tmp_path / "out")) == {"task 2": "invalid_path"}


def test_label_studio_missing_upload_lists_both_names(tmp_path):
    make_image(tmp_path / "a.png", RED)
    tasks = [ls_task(1, "a.png", ["cat"]), ls_task(2, "/data/upload/3/abcdef12-gone.png", ["cat"])]
    source = tmp_path / "export.json"
    source.write_text(json.dumps(tasks), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out")

    detail = read_report(tmp_path / "out")["not_imported"][0]["detail"]
    assert "abcdef12-gone.png or " in detail
    assert detail.endswith(f"{tmp_path}/gone.png")


def test_label_studio_json_min_detects_choice_field(tmp_path):
    make_image(tmp_path / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    make_image(tmp_path / "c.png", BLUE, seed=2)
    rows = [
        {"image": "/data/upload/2/a.png", "id": 1, "species": "cat", "annotator": 1, "lead_time": 2.5,
         "created_at": "2024-01-01T00:00:00Z"},
        {"image": "/data/upload/2/b.png", "id": 2, "species": {"choices": ["dog"]}, "annotator": 1},
        {"image": "/data/upload/2/c.png", "id": 3, "species": {"choices": ["cat", "dog"]}, "annotator": 1},
    ]
    source = tmp_path / "min.json"
    source.write_text(json.dumps(rows), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out")

    assert [row["label"] for row in read_manifest(tmp_path / "out")] == ["cat", "dog"]
    assert reasons_by_item(read_report(tmp_path / "out")) == {"task 3": "several_labels"}


def test_label_studio_json_min_ambiguous_field_raises(tmp_path):
    rows = [{"image": "a.png", "id": 1, "species": "cat", "caption": "a cat on a mat"}]
    source = tmp_path / "min.json"
    source.write_text(json.dumps(rows), "utf-8")

    with pytest.raises(DatasetError, match=r"\('caption', 'species'\); pass --label-column"):
        import_annotations("label-studio", source, tmp_path / "out")


def test_label_studio_json_min_label_column_option(tmp_path):
    make_image(tmp_path / "a.png", RED)
    rows = [{"image": "a.png", "id": 1, "species": "cat", "caption": "a cat on a mat"}]
    source = tmp_path / "min.json"
    source.write_text(json.dumps(rows), "utf-8")

    import_annotations("label-studio", source, tmp_path / "out", ImportOptions(label_column="species"))

    assert read_classes(tmp_path / "out") == ["cat"]


def test_label_studio_invalid_json_names_file(tmp_path):
    source = tmp_path / "export.json"
    source.write_text('[{"id": 1,', "utf-8")

    with pytest.raises(DatasetError, match=r"export\.json: invalid JSON .*expected a Label Studio JSON"):
        import_annotations("label-studio", source, tmp_path / "out")


def test_label_studio_top_level_object_raises(tmp_path):
    source = tmp_path / "export.json"
    source.write_text('{"tasks": []}', "utf-8")

    with pytest.raises(DatasetError, match="the top level is a JSON dict"):
        import_annotations("label-studio", source, tmp_path / "out")


# ---------------------------------------------------------------------------------------
# Roboflow


def test_roboflow_folder_layout_keeps_split(tmp_path):
    export = tmp_path / "export"
    make_image(export / "train" / "cat" / "a.jpg", RED, fmt="JPEG")
    make_image(export / "train" / "dog" / "b.jpg", GREEN, seed=1, fmt="JPEG")
    make_image(export / "valid" / "cat" / "c.jpg", RED, seed=2, fmt="JPEG")
    make_image(export / "test" / "dog" / "d.jpg", GREEN, seed=3, fmt="JPEG")
    (export / "README.roboflow.txt").write_text("exported from Roboflow")

    import_annotations("roboflow", export, tmp_path / "out")

    rows = {Path(row["path"]).name: (row["label"], row["split"]) for row in read_manifest(tmp_path / "out")}
    assert rows == {"a.jpg": ("cat", "train"), "b.jpg": ("dog", "train"),
                    "c.jpg": ("cat", "val"), "d.jpg": ("dog", "test")}
    report = read_report(tmp_path / "out")
    assert report["counts_by_split"]["cat"] == {"train": 1, "val": 1, "test": 0}
    assert report["n_not_imported"] == 0


def test_roboflow_reports_stray_images(tmp_path):
    export = tmp_path / "export"
    make_image(export / "train" / "cat" / "a.png", RED)
    make_image(export / "train" / "loose.png", RED, seed=1)
    make_image(export / "extra" / "e.png", GREEN, seed=2)

    import_annotations("roboflow", export, tmp_path / "out")

    reasons = reasons_by_path(read_report(tmp_path / "out"))
    assert reasons == {"train/loose.png": "outside_class_folder", "extra/e.png": "outside_split_folders"}


def test_roboflow_symlink_escape_is_outside_root(tmp_path):
    export = tmp_path / "export"
    make_image(export / "train" / "cat" / "a.png", RED)
    outside = make_image(tmp_path / "private" / "p.png", GREEN, seed=1)
    (export / "train" / "cat" / "p.png").symlink_to(outside)

    import_annotations("roboflow", export, tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out")) == {"train/cat/p.png": "outside_root"}


def test_roboflow_one_hot_csv_reports_zero_and_several(tmp_path):
    export = tmp_path / "export"
    for name, seed in (("a.jpg", 0), ("b.jpg", 1), ("c.jpg", 2), ("d.jpg", 3), ("e.jpg", 4)):
        make_image(export / "valid" / name, RED, seed=seed, fmt="JPEG")
    (export / "valid" / "_classes.csv").write_text(
        "filename, cat, dog\na.jpg, 1, 0\nb.jpg, 0, 1\nc.jpg, 0, 0\nd.jpg, 1, 1\n", "utf-8")
    make_image(export / "train" / "cat" / "t.jpg", RED, seed=5, fmt="JPEG")

    import_annotations("roboflow", export, tmp_path / "out")

    rows = {Path(row["path"]).name: (row["label"], row["split"]) for row in read_manifest(tmp_path / "out")}
    assert rows == {"a.jpg": ("cat", "val"), "b.jpg": ("dog", "val"), "t.jpg": ("cat", "train")}
    by_item = reasons_by_item(read_report(tmp_path / "out"))
    assert by_item["valid/_classes.csv line 4"] == "no_label"
    assert by_item["valid/_classes.csv line 5"] == "several_labels"
    assert by_item["valid/e.jpg"] == "not_annotated"


def test_roboflow_one_hot_invalid_value_raises(tmp_path):
    export = tmp_path / "export"
    (export / "train").mkdir(parents=True)
    (export / "train" / "_classes.csv").write_text("filename, cat, dog\na.jpg, 1, yes\n", "utf-8")

    with pytest.raises(DatasetError, match=r"line 2: column 'dog' contains 'yes'; expected 0 or 1"):
        import_annotations("roboflow", export, tmp_path / "out")


def test_roboflow_without_split_folders_raises(tmp_path):
    make_image(tmp_path / "export" / "cat" / "a.png", RED)

    with pytest.raises(DatasetError, match="no train/, valid/ or test/ folder"):
        import_annotations("roboflow", tmp_path / "export", tmp_path / "out")


# ---------------------------------------------------------------------------------------
# Pascal VOC


def test_voc_image_with_one_class_takes_it(tmp_path):
    make_image(tmp_path / "ann" / "a.png", RED, size=(40, 30))
    make_image(tmp_path / "ann" / "b.png", GREEN, size=(40, 30), seed=1)
    make_image(tmp_path / "ann" / "c.png", BLUE, size=(40, 30), seed=2)
    write_voc(tmp_path / "ann" / "a.xml", "a.png", [("cat", (1, 1, 10, 10)), ("cat", (12, 12, 20, 20))])
    write_voc(tmp_path / "ann" / "b.xml", "b.png", [("cat", (1, 1, 10, 10)), ("dog", (12, 12, 20, 20))])
    write_voc(tmp_path / "ann" / "c.xml", "c.png", [])

    import_annotations("voc", tmp_path / "ann", tmp_path / "out")

    rows = read_manifest(tmp_path / "out")
    assert [(Path(row["path"]).name, row["label"]) for row in rows] == [("a.png", "cat")]
    assert reasons_by_item(read_report(tmp_path / "out")) == {"b.xml": "mixed_labels", "c.xml": "no_objects"}


def test_voc_crops_size_with_margin(tmp_path):
    make_image(tmp_path / "a.png", RED, size=(40, 30))
    source = write_voc(tmp_path / "a.xml", "a.png", [("cat", (10, 10, 20, 20)), ("蒲公英", (30, 20, 40, 30))])
    out = tmp_path / "out"

    import_annotations("voc", source, out, ImportOptions(crops=True, margin=0.5))

    # (10, 10)-(20, 20) grows by 5 px on each side; (30, 20)-(40, 30) is clipped at 40x30.
    with Image.open(out / "crops" / "cat" / "a_1.png") as crop:
        assert crop.size == (20, 20)
    with Image.open(out / "crops" / "蒲公英" / "a_2.png") as crop:
        assert crop.size == (15, 15)
    assert read_classes(out) == ["cat", "蒲公英"]
    assert {row["path"] for row in read_manifest(out)} == {
        str(out / "crops" / "cat" / "a_1.png"), str(out / "crops" / "蒲公英" / "a_2.png")}


def test_voc_crops_without_margin_match_box(tmp_path):
    make_image(tmp_path / "a.png", RED, size=(40, 30))
    source = write_voc(tmp_path / "a.xml", "a.png", [("cat", (10.5, 5, 20, 25))])

    import_annotations("voc", source, tmp_path / "out", ImportOptions(crops=True))

    with Image.open(tmp_path / "out" / "crops" / "cat" / "a_1.png") as crop:
        assert crop.size == (10, 20)


def test_voc_crops_report_invalid_box_and_size_mismatch(tmp_path):
    make_image(tmp_path / "a.png", RED, size=(40, 30))
    make_image(tmp_path / "b.png", GREEN, size=(40, 30), seed=1)
    write_voc(tmp_path / "a.xml", "a.png",
              [("cat", (1, 1, 10, 10)), ("cat", (20, 5, 10, 9)), ("cat", (50, 40, 60, 50)), ("", (1, 1, 5, 5))])
    write_voc(tmp_path / "b.xml", "b.png", [("dog", (1, 1, 10, 10))], size=(30, 40))

    import_annotations("voc", tmp_path, tmp_path / "out", ImportOptions(crops=True))

    by_item = reasons_by_item(read_report(tmp_path / "out"))
    assert by_item["a.xml object 2"] == "invalid_box"
    assert by_item["a.xml object 3"] == "invalid_box"
    assert by_item["a.xml object 4"] == "no_label"
    assert by_item["b.xml object 1"] == "size_mismatch"
    assert len(read_manifest(tmp_path / "out")) == 1


def test_voc_filename_escape_is_outside_root(tmp_path):
    make_image(tmp_path / "root" / "a.png", RED)
    make_image(tmp_path / "b.png", GREEN, seed=1)
    write_voc(tmp_path / "root" / "a.xml", "a.png", [("cat", (1, 1, 5, 5))])
    write_voc(tmp_path / "root" / "b.xml", "../b.png", [("dog", (1, 1, 5, 5))])

    import_annotations("voc", tmp_path / "root", tmp_path / "out")

    assert reasons_by_path(read_report(tmp_path / "out")) == {"../b.png": "outside_root"}


def test_voc_crops_rejected_for_other_formats(csv_export, tmp_path):
    with pytest.raises(DatasetError, match="--crops applies only to the voc format, not to csv"):
        import_annotations("csv", csv_export, tmp_path / "out", ImportOptions(crops=True))


def test_voc_crops_reject_copy(tmp_path):
    source = write_voc(tmp_path / "a.xml", "a.png", [])

    with pytest.raises(DatasetError, match="--copy and --crops cannot be combined"):
        import_annotations("voc", source, tmp_path / "out", ImportOptions(crops=True, copy_images=True))


def test_voc_negative_margin_raises(tmp_path):
    source = write_voc(tmp_path / "a.xml", "a.png", [])

    with pytest.raises(DatasetError, match=r"--margin -0\.1: expected a fraction"):
        import_annotations("voc", source, tmp_path / "out", ImportOptions(crops=True, margin=-0.1))


# ---------------------------------------------------------------------------------------
# Helpers of the writing step


def test_crop_bounds_clips_to_image():
    assert crop_bounds(Box(0, 0, 10, 10), 0.5, 12, 12) == (0, 0, 12, 12)


def test_crop_bounds_huge_margin_takes_whole_image():
    assert crop_bounds(Box(5, 5, 10, 10), 1e308, 40, 30) == (0, 0, 40, 30)


def test_crop_bounds_outside_image_is_none():
    assert crop_bounds(Box(50, 50, 60, 60), 0.0, 40, 30) is None


def test_class_folder_names_are_safe_and_distinct():
    names = class_folder_names(["Cat", "a/b", "a_b", "cat", ".hidden"])

    assert names["a/b"] == "a_b"
    assert names["a_b"] == "a_b-2"
    assert names["Cat"] == "Cat"
    assert names["cat"] == "cat-2"
    assert names[".hidden"] == "_hidden"


# ---------------------------------------------------------------------------------------
# CLI


def test_import_command_prints_counts(csv_export, tmp_path):
    result = runner.invoke(app, ["import", "csv", str(csv_export), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert "3 of 3 items imported in 2 classes (csv)" in result.output
    assert (tmp_path / "out" / "manifest.csv").is_file()


def test_import_command_lists_reasons(tmp_path):
    make_image(tmp_path / "a.png", RED)
    source = write_csv(tmp_path / "export.csv", [["a.png", "cat"], ["gone.png", "cat"]])

    result = runner.invoke(app, ["import", "csv", str(source), "--out", str(tmp_path / "out")])

    assert result.exit_code == 0, result.output
    assert "not imported: 1 items (1 missing)" in result.output
    assert "export.csv line 3 (gone.png): missing" in result.output


def test_import_command_json_report(csv_export, tmp_path):
    result = runner.invoke(app, ["import", "csv", str(csv_export), "--out", str(tmp_path / "out"), "--json"])

    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"cat": 2, "dog": 1}


def test_import_command_bad_column_exits_with_dataset_code(csv_export, tmp_path):
    result = runner.invoke(app, ["import", "csv", str(csv_export), "--out", str(tmp_path / "out"),
                                 "--label-column", "species"])

    assert result.exit_code == 4
    assert "missing column(s) 'species'" in result.output


def test_import_command_rejects_unknown_format(csv_export, tmp_path):
    result = runner.invoke(app, ["import", "coco", str(csv_export), "--out", str(tmp_path / "out")])

    assert result.exit_code == 2
    assert "coco" in result.output


def test_main_help_lists_import():
    result = runner.invoke(app, ["--help"])

    assert result.exit_code == 0
    assert "import" in result.output


def test_import_help_does_not_import_tensorflow():
    code = (
        "import sys\n"
        "from imgclf.cli.main import app\n"
        "try:\n"
        "    app(['import', '--help'])\n"
        "except SystemExit as exit:\n"
        "    assert exit.code == 0, exit.code\n"
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "False False"
