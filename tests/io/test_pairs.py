"""The one PAIRS.csv reader (``rdmm evaluate`` and the data modules)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rdmm_lightning.io.pairs import read_pairs_csv
from tests.pipeline.helpers import write_pair


@pytest.fixture(scope="module")
def pair2d(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("pairs")
    write_pair(folder / "p", 2)
    return folder


def test_read_pairs_csv_resolves_paths_and_skips_blank_lines(pair2d, tmp_path):
    p = pair2d / "p"
    sub = tmp_path / "lists"
    sub.mkdir()
    rel = Path("..") / ".." / pair2d.name / "p"
    text = (
        "\ufeffid, source ,target,target_label,source_label\n"  # BOM, spaces, any column order
        f"x,{rel}/source.nii.gz,{p}/target.nii.gz,,\n"
        "\n"
        f'"y","{p}/source.nii.gz",{p}/target.nii.gz,{p}/target_label.nii.gz,'
        f"{p}/source_label.nii.gz\n"
    )
    (sub / "pairs.csv").write_text(text)
    # the relative path is relative to the CSV's folder, not the working directory
    rows = read_pairs_csv(sub / "pairs.csv", check_files=False)
    assert [(r.index, r.line) for r in rows] == [(1, 2), (2, 4)]
    assert Path(rows[0].source).resolve() == (p / "source.nii.gz").resolve()
    assert not rows[0].has_labels and rows[0].target_label is None
    assert rows[1].has_labels and rows[1].source_label == str(p / "source_label.nii.gz")


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty pairs file"),
        ("source,target\n", "no pairs"),
        ("source,image\na.nii.gz,b.nii.gz\n", "missing column(s) target"),
        ("source,target,source_label\na.nii.gz,b.nii.gz,c.nii.gz\n", "target_label"),
        ("source,target\na.nii.gz,\n", "line 2: empty target cell"),
        ("source,target\n{p}/source.nii.gz,{p}/absent.nii.gz\n", "line 2, target"),
        ("source,target\n{p}/source.nii.gz,{p}/target.txt\n", "line 2, target"),
    ],
)
def test_read_pairs_csv_errors_name_the_file_and_line(pair2d, tmp_path, text, message):
    csv_file = tmp_path / "pairs.csv"
    p = pair2d / "p"
    if "target.txt" in text:
        (p / "target.txt").write_text("x")
    csv_file.write_text(text.format(p=p))
    with pytest.raises(ValueError, match=r"pairs\.csv") as info:
        read_pairs_csv(csv_file)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_extra_columns_allow_empty_and_file_types(pair2d, tmp_path):
    p = pair2d / "p"
    csv_file = tmp_path / "pairs.csv"
    csv_file.write_text(
        f"source,target,source_side,target_side\n{p}/source.nii.gz,{p}/target.nii.gz, left ,R\n"
    )
    (row,) = read_pairs_csv(csv_file, extra_columns=("source_side", "target_side"))
    assert row.extra == {"source_side": "left", "target_side": "R"} and row.line == 2
    with pytest.raises(ValueError, match="missing column.*visit"):
        read_pairs_csv(csv_file, extra_columns=("visit",))
    header_only = tmp_path / "header.csv"
    header_only.write_text("source,target\n")
    assert read_pairs_csv(header_only, allow_empty=True) == []
    # a file type no reader knows: accepted only when image types are not checked
    png = tmp_path / "target.xyz"
    png.write_bytes(b"not checked here")
    csv_file.write_text(f"source,target\n{p}/source.nii.gz,{png}\n")
    assert read_pairs_csv(csv_file, image_types=False)[0].target == str(png)
    with pytest.raises(ValueError, match="line 2, target: .*unsupported file type"):
        read_pairs_csv(csv_file)
    csv_file.write_text(f"source,target,source_label,target_label\n{p}/s.nii.gz,{p}/t.nii.gz,a,\n")
    with pytest.raises(ValueError, match=r"line 2: missing target_label for .*t\.nii\.gz"):
        read_pairs_csv(csv_file, check_files=False)
