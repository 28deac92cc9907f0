# SPDX-License-Identifier: Apache-2.0
"""SynthLesion-2D's paired second modality (``paired=True``) and its loading through ``data.paired_column``: the same
lesion in the other modality with its own noise, a sibling tree the class-folder reader ignores, the ``paired``
column, batches carrying ``"paired"``, and the errors naming the case."""

from __future__ import annotations

import copy
import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.config import load_config
from medkd.data.classification import load_image, read_classification_split
from medkd.data.synthetic.lesion_classes import (
    METADATA_COLUMNS,
    make_lesion_class_images,
    write_classification_datalist,
    write_synth_lesion_2d,
)
from medkd.distill.config import DistillConfig
from medkd.distill.data import build_data
from medkd.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_kd.yaml"
COUNTS = {"n_teacher_train": 4, "n_train": 12, "n_val": 5, "n_test": 5, "n_unlabelled": 2}
CSV = ["data.layout=csv", "data.datalist=datalist.csv", "data.paired_column=paired", "data.batch_size=4",
       "data.image_size=[16, 16]", "teacher.cache=false"]


def _rows(root: Path, name: str = "metadata.csv") -> list[dict[str, str]]:
    with (root / name).open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def roots(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    paired = write_synth_lesion_2d(tmp_path_factory.mktemp("paired"), size=32, seed=2, paired=True, **COUNTS)
    plain = write_synth_lesion_2d(tmp_path_factory.mktemp("plain"), size=32, seed=2, **COUNTS)
    write_classification_datalist(paired)
    write_classification_datalist(plain)
    return paired, plain


def test_main_images_unchanged_and_paired_tree_beside_them(roots: tuple[Path, Path]) -> None:
    paired, plain = roots
    for split in ("teacher_train", "train", "val", "test", "unlabelled"):
        files = sorted(p.relative_to(paired) for p in (paired / split).rglob("*.png"))
        assert files and all((paired / f).read_bytes() == (plain / f).read_bytes() for f in files)
    assert not (plain / "paired").exists()
    rows, plain_rows = _rows(paired), _rows(plain)
    assert list(rows[0]) == list(METADATA_COLUMNS) and all(r["paired"] == "" for r in plain_rows)
    for row in rows:
        assert row["paired"] == f"paired/{row['image']}" and (paired / row["paired"]).is_file()
    # the class-folder reader never sees the paired tree as extra cases
    for split in ("train", "test"):
        assert len(read_classification_split(paired, split)) == len(read_classification_split(plain, split))


def test_paired_image_is_the_same_lesion_in_the_other_modality(roots: tuple[Path, Path]) -> None:
    paired, _ = roots
    for row in _rows(paired)[:6]:
        main, second = load_image(paired / row["image"])[0], load_image(paired / row["paired"])[0]
        assert main.shape == second.shape and not np.array_equal(main, second)
    # rendered from the same generator state: identical lesion masks, other intensities, independent noise
    rng = np.random.default_rng(5)
    twin = copy.deepcopy(rng)
    labels, anatomy, severity = [0, 2, 4], [0, 1, 2], [0.3, 0.6, 0.9]
    a, mask_a = make_lesion_class_images(rng, labels, modality="ABA", anatomy=anatomy, severity=severity, size=32)
    b, mask_b = make_lesion_class_images(twin, labels, modality="BAB", anatomy=anatomy, severity=severity, size=32,
                                         acquisition_rng=np.random.default_rng(9))
    assert np.array_equal(mask_a, mask_b)
    inside = mask_a[0].astype(bool)
    # case 0: a bright lesion on a dark organ in modality A, a dark one on a bright organ in B
    assert a[0][inside].mean() > a[0][~inside].mean() and b[0][inside].mean() < b[0][~inside].mean()
    assert not np.array_equal(a[1], b[1])
    # the acquisition generator leaves ``rng`` where it would be without it
    c, _ = make_lesion_class_images(copy.deepcopy(twin), [1], modality="A", anatomy=[0], severity=[0.5], size=32)
    d, _ = make_lesion_class_images(copy.deepcopy(rng), [1], modality="A", anatomy=[0], severity=[0.5], size=32)
    assert np.array_equal(c, d)


def test_datalist_has_the_paired_column_only_when_written(roots: tuple[Path, Path]) -> None:
    paired, plain = roots
    assert "paired" in _rows(paired, "datalist.csv")[0]
    assert "paired" not in _rows(plain, "datalist.csv")[0]
    meta = read_classification_split(paired, "train", datalist="datalist.csv").items[0].metadata
    assert meta["paired"].startswith("paired/train/")


def test_batches_carry_the_paired_modality(roots: tuple[Path, Path]) -> None:
    paired, _ = roots
    data = build_data(load_config(DistillConfig, PRESET, [*CSV, "data.augment=true"]), paired)
    assert "paired" in data.batch_keys
    images, _, cases = data.tensors("train")
    second = data.paired("train")
    assert second.shape == images.shape == (12, 1, 16, 16) and not torch.equal(second, images)
    rows = {r["case"]: r for r in _rows(paired)}
    first = torch.from_numpy(load_image(paired / rows[cases[0]]["paired"]))
    assert torch.allclose(torch.nn.functional.interpolate(first[None], size=(16, 16), mode="bilinear",
                                                          align_corners=False)[0], second[0], atol=1e-6)
    for batch in [b for _, b in zip(range(3), data.batches(0))]:
        assert batch["paired"].shape == batch["image"].shape == (4, 1, 16, 16)
        for k, case in enumerate(batch["case"]):  # image and paired flipped together
            i = cases.index(case)
            flipped = not torch.equal(batch["image"][k], images[i])
            assert torch.equal(batch["paired"][k], second[i].flip(-1) if flipped else second[i])
    view = data.subset(metadata={"modality": "A"})
    keep = [cases.index(c) for c in view.tensors("train")[2]]
    assert torch.equal(view.paired("train"), second[keep])
    plain = build_data(load_config(DistillConfig, PRESET, CSV[:2]), paired)
    assert "paired" not in next(iter(plain.batches(0))) and "paired" not in plain.batch_keys
    with pytest.raises(DataError, match="data.paired_column"):
        plain.paired("train")


def test_missing_paired_images_name_the_case(roots: tuple[Path, Path], tmp_path: Path) -> None:
    paired, _ = roots
    rows = _rows(paired, "datalist.csv")
    victim = next(r for r in rows if r["split"] == "train")
    for value, match in (("", f"case {victim['case']} has no paired image"),
                         ("paired/nope.png", f"paired image of case {victim['case']}")):
        table = [dict(r, paired=value, image=str(paired / r["image"])) if r is victim
                 else dict(r, image=str(paired / r["image"]), paired=str(paired / r["paired"])) for r in rows]
        with (tmp_path / "list.csv").open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(table)
        data = build_data(load_config(DistillConfig, PRESET, [*CSV, f"data.datalist={tmp_path / 'list.csv'}"]),
                          paired)
        with pytest.raises(DataError, match=match):
            data.tensors("train")
    with pytest.raises(ConfigError, match="paired_column.*needs data.layout: csv"):
        load_config(DistillConfig, PRESET, ["data.paired_column=paired"])
