# SPDX-License-Identifier: Apache-2.0
"""COCO detection reader (spec grounded_teacher.md §3, §8 test 8) and read_image (PNG 8/16-bit, JPEG, RGB, DICOM)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from medkd.data.coco import read_coco_split, read_image
from medkd.errors import DataError


def _layout(root: Path, split: str = "train", *, images=None, annotations=None, categories=None,
            sizes=((20, 30), (16, 16), (10, 12)), prefix: str = "") -> Path:
    """A COCO dataset folder with one PNG per image and the given (or default) JSON fields."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(exist_ok=True)
    default_images = []
    for i, (h, w) in enumerate(sizes):
        name = f"img{i}.png"
        Image.fromarray(np.zeros((h, w), np.uint8)).save(root / "images" / split / name)
        default_images.append({"id": 100 + i, "file_name": prefix + name, "height": h, "width": w})
    doc = {
        "images": default_images if images is None else images,
        "annotations": [
            {"id": 1, "image_id": 100, "category_id": 9, "bbox": [2, 3, 10, 4], "iscrowd": 0},
            {"id": 2, "image_id": 100, "category_id": 4, "bbox": [0.5, 1.5, 5.0, 6.0], "iscrowd": 0},
            {"id": 3, "image_id": 101, "category_id": 9, "bbox": [1, 1, 3, 3]},
        ] if annotations is None else annotations,
        "categories": [{"id": 9, "name": "spiculated"}, {"id": 4, "name": "mass"}] if categories is None
        else categories,
    }
    path = root / "annotations" / f"instances_{split}.json"
    path.write_text(json.dumps(doc))
    return path


def test_reads_layout_remaps_ids_and_converts_xywh(tmp_path):
    _layout(tmp_path)
    ds = read_coco_split(tmp_path, "train")
    # categories sorted by id: 4 (mass) -> 0, 9 (spiculated) -> 1
    assert ds.class_names == ("mass", "spiculated") and ds.category_ids == (4, 9) and ds.num_classes == 2
    assert len(ds) == 3 and [r.image_id for r in ds.records] == [100, 101, 102]
    first = ds.records[0]
    assert first.boxes.dtype == np.float32 and first.labels.dtype == np.int64
    np.testing.assert_allclose(first.boxes, [[2, 3, 12, 7], [0.5, 1.5, 5.5, 7.5]])
    assert first.labels.tolist() == [1, 0]
    assert (first.height, first.width) == (20, 30) and first.file == tmp_path / "images" / "train" / "img0.png"
    # an image without annotations is kept, with empty arrays of the right shapes
    assert ds.records[2].boxes.shape == (0, 4) and ds.records[2].labels.shape == (0,)


def test_full_split_and_prefixed_file_names(tmp_path):
    """RSNA-BSD1K ships instances_full.json; file_name may already contain images/<split>/."""
    _layout(tmp_path, "full", prefix="images/full/")
    ds = read_coco_split(tmp_path, "full")
    assert ds.split == "full" and len(ds) == 3 and ds.records[0].file.is_file()


def test_class_names_fix_the_mapping(tmp_path):
    _layout(tmp_path)
    ds = read_coco_split(tmp_path, "train", class_names=["spiculated", "mass", "calcification_cluster"])
    assert ds.records[0].labels.tolist() == [0, 1] and ds.category_ids == (9, 4, -1) and ds.num_classes == 3
    with pytest.raises(DataError, match=r"instances_train\.json: categories \['spiculated'\] are not among"):
        read_coco_split(tmp_path, "train", class_names=["mass"])


def test_crowd_and_degenerate_dropped_with_one_counting_warning(tmp_path, caplog):
    anns = [
        {"image_id": 100, "category_id": 4, "bbox": [2, 2, 5, 5], "iscrowd": 1},
        {"image_id": 100, "category_id": 4, "bbox": [2, 2, 0, 5]},
        {"image_id": 100, "category_id": 4, "bbox": [2, 2, 5, -1]},
        {"image_id": 100, "category_id": 4, "bbox": [30.2, 2, 0.5, 5]},  # clipped to zero width
        {"image_id": 100, "category_id": 4, "bbox": [-0.5, 2, 5, 5]},  # within tolerance: clipped, kept
        {"image_id": 101, "category_id": 9, "bbox": [1, 1, 3, 3]},
    ]
    _layout(tmp_path, annotations=anns)
    with caplog.at_level(logging.WARNING, logger="medkd.data.coco"):
        ds = read_coco_split(tmp_path, "train")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 4 annotation(s) (1 iscrowd, 3 degenerate" in warnings[0].getMessage()
    np.testing.assert_allclose(ds.records[0].boxes, [[0, 2, 4.5, 7]])
    assert ds.num_boxes == 2


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda p: p.write_text("{\"images\": [1, 2"), r"instances_train\.json: not valid JSON"),
        (lambda p: p.write_text(json.dumps({"images": [], "categories": []})), r"missing top-level key.*'annotations'"),
        (lambda p: _patch(p, lambda d: d["images"][1].pop("width")), r"images\[1\] lacks key 'width'"),
        (lambda p: _patch(p, lambda d: d["annotations"][0].pop("bbox")), r"annotations\[0\] lacks key 'bbox'"),
        (lambda p: _patch(p, lambda d: d["annotations"][2].update(category_id=77)),
         r"annotations\[2\]: unknown category_id 77"),
        (lambda p: _patch(p, lambda d: d["annotations"][2].update(image_id=5)),
         r"annotations\[2\]: unknown image_id 5"),
        (lambda p: _patch(p, lambda d: d["annotations"][0].update(bbox=[25, 3, 10, 4])),
         r"annotations\[0\]: box .* lies outside image 100 \(img0\.png, 30 x 20"),
        (lambda p: _patch(p, lambda d: d["annotations"][0].update(bbox=[2, -3, 10, 4])), r"lies outside image 100"),
        (lambda p: _patch(p, lambda d: d.update(images=[])), r"'images' is empty"),
        (lambda p: _patch(p, lambda d: d["images"][0].update(file_name="../../etc/passwd")), r"must be a relative"),
        (lambda p: _patch(p, lambda d: d["annotations"][0].update(bbox=[1, 2, 3])), r"bbox must be 4 numbers"),
        (lambda p: _patch(p, lambda d: d["images"].append(dict(d["images"][0]))), r"duplicate image id 100"),
    ],
)
def test_bad_json_names_file_and_problem(tmp_path, edit, message):
    path = _layout(tmp_path)
    edit(path)
    with pytest.raises(DataError, match=message) as info:
        read_coco_split(tmp_path, "train")
    assert info.value.path == str(path)


def _patch(path: Path, change) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


def test_missing_image_and_missing_split(tmp_path):
    path = _layout(tmp_path)
    (tmp_path / "images" / "train" / "img1.png").unlink()
    with pytest.raises(DataError, match=r"img1\.png: missing image file \(listed as images\[1\] in .*instances_train"):
        read_coco_split(tmp_path, "train")
    with pytest.raises(DataError, match=r"instances_val\.json: no annotation file for split 'val' \(splits found"):
        read_coco_split(tmp_path, "val")
    assert path.is_file()


# --- read_image ---------------------------------------------------------------------------------------------------


def test_read_png_8_and_16_bit_jpeg_and_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray8 = rng.integers(0, 256, (12, 17), dtype=np.uint8)
    gray16 = rng.integers(0, 65536, (12, 17), dtype=np.uint16)
    rgb = rng.integers(0, 256, (12, 17, 3), dtype=np.uint8)
    Image.fromarray(gray8).save(tmp_path / "g8.png")
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    Image.fromarray(np.full((12, 17), 200, np.uint8)).save(tmp_path / "flat.jpg", quality=95)
    np.testing.assert_array_equal(read_image(tmp_path / "g8.png"), gray8.astype(np.float32))
    out16 = read_image(tmp_path / "g16.png")
    assert out16.dtype == np.float32 and out16.max() > 255
    np.testing.assert_array_equal(out16, gray16.astype(np.float32))
    luma = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    np.testing.assert_allclose(read_image(tmp_path / "rgb.png"), luma, atol=1e-3)
    jpg = read_image(tmp_path / "flat.jpg")
    assert jpg.shape == (12, 17) and abs(float(jpg.mean()) - 200) < 2


def _write_mg(path: Path, pixels: np.ndarray, *, photometric: str = "MONOCHROME2", frames: int = 1,
              slope: float = 1.0, intercept: float = 0.0) -> Path:
    """A minimal single-frame digital mammography (MG) instance."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"  # Digital Mammography X-Ray - For Presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientName, ds.PatientID = "MG", "Doe^Jane", "PID-0042"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_read_dicom_mg_modality_lut_and_monochrome1(tmp_path):
    pixels = np.arange(6 * 8, dtype=np.uint16).reshape(6, 8) * 50
    out = read_image(_write_mg(tmp_path / "a.dcm", pixels, slope=2.0, intercept=-10.0))
    np.testing.assert_allclose(out, pixels * 2.0 - 10.0)
    assert out.dtype == np.float32 and out.shape == (6, 8)
    inverted = read_image(_write_mg(tmp_path / "b.dcm", pixels, photometric="MONOCHROME1"))
    # MONOCHROME1: the darkest stored value becomes the brightest, order reversed, same range
    assert inverted[0, 0] == pixels.max() and inverted[-1, -1] == pixels.min()
    np.testing.assert_allclose(inverted, pixels.max() + pixels.min() - pixels.astype(np.float32))
    # detected by the DICM preamble without a .dcm suffix
    np.testing.assert_allclose(read_image(_write_mg(tmp_path / "noext", pixels)), pixels)


def test_read_image_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match=r"missing\.png: no such image file"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"junk\.png: not a readable image"):
        read_image(tmp_path / "junk.png")
    multi = _write_mg(tmp_path / "multi.dcm", np.zeros((2, 4, 4), np.uint16), frames=2)
    with pytest.raises(DataError, match=r"multi\.dcm: multi-frame DICOM \(2 frames\) refused") as info:
        read_image(multi)
    assert "Doe" not in str(info.value) and "PID-0042" not in str(info.value)
