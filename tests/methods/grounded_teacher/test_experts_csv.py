# SPDX-License-Identifier: Apache-2.0
"""The CSV expert (NA rows, basename join, bad files) and the class policies of expert boxes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from medkd.errors import ConfigError, DataError
from medkd.methods.grounded_teacher.experts import (
    EXPERTS,
    CsvExpert,
    ExpertBoxes,
    NoExpert,
    assign_classes,
    create_expert,
)

HEADER = "ImageName,Prompt,MeanConfidence,MaxConfidence,X,Y,W,H\n"
IMAGE = np.zeros((64, 80), np.float32)


def _write(tmp_path: Path, body: str, header: str = HEADER) -> Path:
    path = tmp_path / "expert.csv"
    path.write_text(header + body)
    return path


def test_na_rows_basename_join_and_order(tmp_path: Path) -> None:
    # rows out of image order, with folders in ImageName; NA rows = no box
    path = _write(
        tmp_path,
        "out/c.png,mal,0.6,0.95,1,2,3,4\n"
        "C:\\\\exports\\\\a.png,mal,0.7,0.9,10,20,30,15\n"
        "b.png,mal,NA,NA,NA,NA,NA,NA\n"
        "a.png,mal,0.5,0.85,0,0,5,5\n",
    )
    images = ["data/images/train/a.png", "data/images/train/b.png", "data/images/train/c.png", "data/d.png"]
    expert = CsvExpert(path, images, score_threshold=0.8)
    a = expert.predict(IMAGE, images[0])
    assert a.boxes.tolist() == [[10.0, 20.0, 40.0, 35.0], [0.0, 0.0, 5.0, 5.0]]  # x2 = X + W, y2 = Y + H
    np.testing.assert_allclose(a.scores, [0.9, 0.85])
    assert a.labels.tolist() == [-1, -1] and a.prompts == ("mal", "mal")
    assert len(expert.predict(IMAGE, "b.png")) == 0  # NA row
    assert expert.predict(IMAGE, "other/c.png").boxes.tolist() == [[1.0, 2.0, 4.0, 6.0]]
    assert len(expert.predict(IMAGE, "d.png")) == 0  # no row at all
    # the threshold is strict (> tau_e) and the score column can be switched
    assert len(CsvExpert(path, images, score_threshold=0.9).predict(IMAGE, "a.png")) == 0
    mean = CsvExpert(path, images, score_column="MeanConfidence", score_threshold=0.0).predict(IMAGE, "a.png")
    np.testing.assert_allclose(mean.scores, [0.7, 0.5])


def test_unknown_images_are_an_error_naming_the_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.png,mal,0.7,0.9,1,1,2,2\nzz1.png,mal,0.7,0.9,1,1,2,2\nzz2.png,mal,NA,NA,NA,NA,NA,NA\n")
    with pytest.raises(DataError, match=r"expert\.csv: 2 image name\(s\) are not in the image list: zz1.png, zz2.png"):
        CsvExpert(path, ["a.png"])


@pytest.mark.parametrize(
    ("header", "body", "match"),
    [
        ("ImageName,Prompt,MaxConfidence,X,Y,W,H\n", "a.png,mal,0.9,1,1,2,2\n", "missing columns MeanConfidence"),
        (HEADER, "a.png,mal,0.7,0.9,1,one,2,2\n", "line 2: column Y is not a number"),
        (HEADER, "a.png,mal,0.7,0.9,1,1,NA,2\n", "line 2: a box needs all of X, Y, W, H"),
        (HEADER, "a.png,mal,0.7,NA,1,1,2,2\n", "line 2: a box without a score"),
        (HEADER, "a.png,mal,0.7,1.5,1,1,2,2\n", r"line 2: MaxConfidence 1.5 is outside \[0, 1\]"),
        (HEADER, "a.png,mal,0.7,0.9,70,1,20,2\n", "line 2: box .* lies outside the 80 x 64 image"),
    ],
)
def test_bad_csv(tmp_path: Path, header: str, body: str, match: str) -> None:
    path = _write(tmp_path, body, header)
    with pytest.raises(DataError, match=match) as info:
        CsvExpert(path, ["a.png"], image_sizes={"a.png": (64, 80)})
    assert str(info.value).startswith(str(path))


def test_boxes_within_tolerance_clipped_and_missing_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "a.png,mal,0.7,0.9,-0.5,60,80.5,4.5\n")
    box = CsvExpert(path, ["a.png"], image_sizes={"a.png": (64, 80)}, score_threshold=0.0).predict(IMAGE, "a.png")
    assert box.boxes.tolist() == [[0.0, 60.0, 80.0, 64.0]]
    with pytest.raises(DataError, match="cannot read"):
        CsvExpert(tmp_path / "nope.csv", ["a.png"])


def test_registry_and_none_expert(tmp_path: Path) -> None:
    assert {"csv", "none", "sam"} <= set(EXPERTS.list())
    assert isinstance(create_expert("none"), NoExpert)
    path = _write(tmp_path, "a.png,mal,0.7,0.9,1,1,2,2\n")
    assert len(create_expert("csv", csv_path=path, image_names=["a.png"]).predict(IMAGE, "a.png")) == 1
    with pytest.raises(KeyError, match="Did you mean 'csv'"):
        create_expert("cvs")


EB = ExpertBoxes(
    [[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70]],
    [0.9, 0.9, 0.9, 0.9],
    [-1, -1, -1, 0],
    ("mal", "calc", "other", "mal"),
)


def test_teacher_match_policy() -> None:
    teacher = {
        "boxes": np.array([[1, 1, 10, 10], [20, 20, 26, 30], [21, 21, 30, 30], [40, 40, 50, 50]], np.float32),
        "scores": np.array([0.5, 0.9, 0.2, 0.01], np.float32),
        "labels": np.array([1, 0, 1, 1]),
    }
    out = assign_classes(EB, teacher, "teacher_match", 2)
    # box 0 -> teacher 0 (IoU 0.81); box 1 -> the best-IoU teacher (IoU 0.81 vs 0.6); box 2's only match scores
    # below 0.05 -> dropped; box 3 already has a class
    assert out.labels.tolist() == [1, 1, 0]
    assert out.boxes[:, 0].tolist() == [0.0, 20.0, 60.0]
    assert assign_classes(EB, None, "teacher_match", 2).labels.tolist() == [0]


def test_fixed_and_prompt_map_policies() -> None:
    assert assign_classes(EB, None, "fixed:0", 1).labels.tolist() == [0, 0, 0, 0]
    assert assign_classes(EB, None, "fixed:1", 2).labels.tolist() == [1, 1, 1, 0]
    out = assign_classes(EB, None, "prompt_map", 2, prompt_map={"mal": 1, "calc": 0})
    assert out.labels.tolist() == [1, 0, 0] and out.prompts == ("mal", "calc", "mal")
    with pytest.raises(ConfigError, match="outside 0..0"):
        assign_classes(EB, None, "fixed:1", 1)
    with pytest.raises(ConfigError, match="needs a map"):
        assign_classes(EB, None, "prompt_map", 2)
    with pytest.raises(ConfigError, match="unknown expert class policy"):
        assign_classes(EB, None, "nearest", 2)
