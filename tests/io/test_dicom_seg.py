# SPDX-License-Identifier: Apache-2.0
"""DICOM SEG writer: masks round-trip through highdicom on the right source slices, segments carry their codes,
UIDs are deterministic, writes are atomic, bad input is refused, and dciodvfy finds no errors."""

from __future__ import annotations

import copy
import logging
import re
import traceback
import warnings
from pathlib import Path

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")

from medkd.data.synthetic_dicom import write_dicom_series  # noqa: E402
from medkd.io.dicom_seg import (  # noqa: E402
    dciodvfy_messages,
    seg_uids,
    source_tag_problems,
    validate_with_dciodvfy,
    write_seg,
)
from medkd.io.labels import LabelInfo, labels_from_dicts  # noqa: E402

CT5N = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892001" / "CT5N"
MODEL = {"model_name": "tiny_unet", "model_version": "1.2.3"}
# dicom3tools 2022 (Debian/Ubuntu) predates the Label Map Segmentation IOD (2024): it cannot verify those files
LABELMAP_TOOL_GAPS = (r"^Error - Information Object Not found$", r"^Error - SegmentNumber not monotonically .* of 0$")


def assert_dciodvfy_clean(path: Path, allowed: tuple[str, ...] = ()) -> None:
    """No ``Error`` lines from dciodvfy (warnings allowed, printed on failure); skip when it is not installed."""
    messages = dciodvfy_messages(path)
    if messages is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; `make test` installs it)")
    errors = [m for m in messages if m.startswith("Error") and not any(re.match(a, m) for a in allowed)]
    assert not errors, "dciodvfy errors:\n" + "\n".join(messages)


def sorted_by_normal(datasets: list) -> list:
    """Slices sorted along the normal of their (shared) orientation, as the volume stage does."""
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return sorted(datasets, key=lambda ds: float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))))


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    """6 slices of 24 x 20 (non-square), files named in shuffled order, read and sorted by position."""
    synthetic = write_dicom_series(tmp_path_factory.mktemp("src"), n_slices=6, rows=24, cols=20, shuffle_names=True)
    datasets = sorted([pydicom.dcmread(p) for p in synthetic.paths], key=lambda ds: float(ds.ImagePositionPatient[2]))
    return synthetic, datasets


@pytest.fixture(scope="module")
def labels() -> list[LabelInfo]:
    """Three labels with non-contiguous values, in an order that is not sorted by value."""
    return labels_from_dicts([{"value": 4, "name": "LV"}, {"value": 1, "name": "RV"}, {"value": 7, "name": "Myo"}])


def label_map(shape: tuple[int, int, int]) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    mask[1:4, 2:9, 3:8] = 1
    mask[2:5, 12:20, 6:15] = 4
    mask[5, 0:3, 17:20] = 7  # last slice, corner: catches a flipped slice or row/column order
    return mask


def read_back(path: Path, datasets: list, labels: list[LabelInfo]) -> np.ndarray:
    """The label map recovered from a SEG, slice i from source instance i, segment numbers mapped to values."""
    seg = hd.seg.segread(path)
    numbers = seg.get_pixels_by_source_instance(
        [ds.SOPInstanceUID for ds in datasets], combine_segments=True, dtype=np.uint16
    )
    values = np.array([0] + [label.value for label in labels])
    return values[numbers]


def write(datasets, mask, labels, path, **kwargs) -> Path:
    kwargs.setdefault("uid_entropy", [datasets[0].SeriesInstanceUID, *MODEL.values(), "seg"])
    return write_seg(datasets, mask, labels, path, **{**MODEL, **kwargs})


@pytest.mark.parametrize("seg_type", ["binary", "labelmap"])
def test_seg_round_trip(tmp_path, series, labels, seg_type):
    synthetic, datasets = series
    mask = label_map((6, 24, 20))
    entropy = [synthetic.series_uid, "tiny_unet", "1.2.3", "sha", "seg"]
    path = write(datasets, mask, labels, tmp_path / "seg.dcm", seg_type=seg_type, uid_entropy=entropy)
    assert path == tmp_path / "seg.dcm" and not list(tmp_path.glob(".*partial"))
    np.testing.assert_array_equal(read_back(path, datasets, labels), mask)

    seg = hd.seg.segread(path)
    assert seg.SegmentationType == seg_type.upper()
    assert seg.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert (seg.SeriesInstanceUID, seg.SOPInstanceUID) == seg_uids(entropy)
    assert seg.StudyInstanceUID == synthetic.study_uid and seg.FrameOfReferenceUID == synthetic.frame_of_reference_uid
    assert seg.PatientID == datasets[0].PatientID and seg.Manufacturer == "medkd"
    assert "research use only" in seg.SeriesDescription and seg.SeriesNumber == 300
    assert seg.ManufacturerModelName == "tiny_unet" and "1.2.3" in seg.SoftwareVersions
    referenced = seg.ReferencedSeriesSequence
    assert [item.SeriesInstanceUID for item in referenced] == [synthetic.series_uid]
    assert {i.ReferencedSOPInstanceUID for i in referenced[0].ReferencedInstanceSequence} == {
        ds.SOPInstanceUID for ds in datasets
    }
    assert seg.get_segment_numbers() == [1, 2, 3]
    for number, label in enumerate(labels, start=1):
        description = seg.get_segment_description(number)
        assert description.segment_label == label.name
        assert description.segmented_property_type.value == label.code[1]
        assert description.segmented_property_type.scheme_designator == "SCT"
        assert description.segmented_property_category.value == label.category[1]
        assert description.algorithm_type.value == "AUTOMATIC"
        algorithm = description.algorithm_identification[0]
        assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion) == ("tiny_unet", "1.2.3")
        assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"  # DCM Artificial Intelligence
    assert_dciodvfy_clean(path, allowed=LABELMAP_TOOL_GAPS if seg_type == "labelmap" else ())


def test_seg_volume_geometry_matches_source(tmp_path, series, labels):
    """get_volume() of the SEG lands on the source volume's voxels (highdicom builds both from positions)."""
    _, datasets = series
    mask = label_map((6, 24, 20))
    path = write(datasets, mask, labels, tmp_path / "seg.dcm")
    source = hd.get_volume_from_series(datasets)
    volume = hd.seg.segread(path).get_volume(combine_segments=True).match_geometry(source)
    # source volume slice k is the dataset at the same position (highdicom may order slices either way)
    positions = source.map_indices_to_reference(np.array([[k, 0, 0] for k in range(len(datasets))]))
    order = [int(np.argmin([np.abs(p - np.asarray(ds.ImagePositionPatient, float)).sum() for ds in datasets]))
             for p in positions]  # fmt: skip
    values = np.array([0] + [label.value for label in labels])
    np.testing.assert_array_equal(values[volume.array], mask[order])


def test_seg_uids_deterministic():
    series_uid, sop_uid = seg_uids(["1.2.3", "m", "1", "sha", "seg"])
    assert (series_uid, sop_uid) == seg_uids(["1.2.3", "m", "1", "sha", "seg"])
    assert series_uid != sop_uid
    others = (["1.2.4", "m", "1", "sha", "seg"], ["1.2.3", "m", "2", "sha", "seg"], ["1.2.3", "m", "1", "sha", "sr"])
    for other in others:
        assert set(seg_uids(other)).isdisjoint({series_uid, sop_uid})
    assert pydicom.uid.UID(series_uid).is_valid


def test_rerun_writes_same_uids(tmp_path, series, labels):
    _, datasets = series
    mask = label_map((6, 24, 20))
    first = pydicom.dcmread(write(datasets, mask, labels, tmp_path / "a.dcm"))
    again = pydicom.dcmread(write(datasets, mask, labels, tmp_path / "b.dcm"))
    other = pydicom.dcmread(write(datasets, mask, labels, tmp_path / "c.dcm", uid_entropy=["x", "seg"]))
    assert (first.SeriesInstanceUID, first.SOPInstanceUID) == (again.SeriesInstanceUID, again.SOPInstanceUID)
    assert first.SOPInstanceUID != other.SOPInstanceUID and first.SeriesInstanceUID != other.SeriesInstanceUID


def test_failed_write_leaves_nothing(tmp_path, series, labels, monkeypatch):
    _, datasets = series
    mask = label_map((6, 24, 20))
    target = tmp_path / "seg.dcm"
    target.write_bytes(b"previous result")
    real_dcmwrite = pydicom.dcmwrite

    def failing_dcmwrite(filename, dataset, **kwargs):
        real_dcmwrite(filename, dataset, **kwargs)  # the partial file is complete on disk ...
        raise OSError("disk full")  # ... and then the write fails

    monkeypatch.setattr(pydicom, "dcmwrite", failing_dcmwrite)
    with pytest.raises(OSError, match="disk full"):
        write(datasets, mask, labels, target)
    assert target.read_bytes() == b"previous result"  # an earlier file is not replaced by a failed write
    assert sorted(p.name for p in tmp_path.iterdir()) == ["seg.dcm"]
    monkeypatch.undo()
    target.unlink()
    with pytest.raises(OSError, match="disk full"):
        monkeypatch.setattr(pydicom, "dcmwrite", failing_dcmwrite)
        write(datasets, mask, labels, target)
    assert list(tmp_path.iterdir()) == []


def _mask_with(values: dict, shape=(6, 24, 20)) -> np.ndarray:
    mask = np.zeros(shape, np.uint8)
    for i, value in enumerate(values):
        mask[i, i, i] = value
    return mask


@pytest.mark.parametrize(
    "mask, label_dicts, seg_type, match",
    [
        (_mask_with([1, 3, 9]), None, "binary", r"mask values \[3, 9\] are not among the labels \[1, 4, 7\]"),
        (np.zeros((6, 20, 24), np.uint8), None, "binary", r"shape \(6, 20, 24\) .* \(6, 24, 20\)"),
        (np.zeros((5, 24, 20), np.uint8), None, "binary", r"shape \(5, 24, 20\)"),
        (np.zeros((6, 24, 20), np.float32), None, "binary", "integer label values"),
        (np.zeros((6, 24, 20), np.uint8), [], "binary", "at least one label"),
        (np.zeros((6, 24, 20), np.uint8), [{"value": 2, "name": "a"}, {"value": 2, "name": "b"}], "binary", "unique"),
        (np.zeros((6, 24, 20), np.uint8), None, "fractional", "unknown seg_type 'fractional'; choose one of binary"),
    ],
)
def test_bad_input_raises(tmp_path, series, labels, mask, label_dicts, seg_type, match):
    _, datasets = series
    chosen = labels if label_dicts is None else [LabelInfo(d["value"], d["name"]) for d in label_dicts]
    with pytest.raises(ValueError, match=match):
        write(datasets, mask, chosen, tmp_path / "seg.dcm", seg_type=seg_type)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("tag, problem", [("FrameOfReferenceUID", "missing"), ("ImagePositionPatient", "empty"),
                                          ("PatientSex", "missing")])  # fmt: skip
def test_missing_source_tags_named(tmp_path, series, labels, tag, problem):
    _, datasets = series
    victim = copy.deepcopy(datasets[2])  # one slice of six lacks the tag
    if problem == "missing":
        delattr(victim, tag)
    else:
        victim[tag].value = None
    broken = [*datasets[:2], victim, *datasets[3:]]
    assert source_tag_problems(broken) == [f"{tag} {problem}"]
    with pytest.raises(ValueError, match=f"{tag} {problem}"):
        write(broken, np.zeros((6, 24, 20), np.uint8), labels, tmp_path / "seg.dcm")


def test_empty_mask_and_empty_label(tmp_path, series, labels):
    """An all-empty mask still gives a valid SEG (every frame kept, all empty); a label without voxels is
    described but has no frames."""
    _, datasets = series
    path = write(datasets, np.zeros((6, 24, 20), np.uint8), labels, tmp_path / "empty.dcm")
    seg = hd.seg.segread(path)
    assert seg.get_segment_numbers() == [1, 2, 3]
    assert seg.NumberOfFrames == len(datasets) * len(labels)
    assert not read_back(path, datasets, labels).any()
    assert_dciodvfy_clean(path)

    mask = label_map((6, 24, 20))
    mask[mask == 7] = 0  # Myo (segment 3) has no voxels
    path = write(datasets, mask, labels, tmp_path / "partial_labels.dcm")
    seg = hd.seg.segread(path)
    assert seg.get_segment_numbers() == [1, 2, 3] and seg.get_segment_description(3).segment_label == "Myo"
    frames_expected = sum(int((mask[k] == label.value).any()) for k in range(6) for label in labels)
    assert seg.NumberOfFrames == frames_expected
    np.testing.assert_array_equal(read_back(path, datasets, labels), mask)
    assert_dciodvfy_clean(path)


def test_long_strings_are_cut_to_64(tmp_path, series):
    _, datasets = series
    labels = [LabelInfo(1, "L" * 80, ("SCT", "85756007", "Tissue " + "x" * 70))]
    name = "model_" + "n" * 90
    path = write(datasets, label_map((6, 24, 20)) == 1, labels, tmp_path / "seg.dcm", model_name=name,
                 model_version="v" * 70)  # fmt: skip
    seg = pydicom.dcmread(path)
    assert seg.SeriesDescription == f"{name} segmentation - research use only"[:64]
    assert seg.ManufacturerModelName == name[:64] and seg.SegmentSequence[0].SegmentLabel == "L" * 64
    assert len(seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeMeaning) == 64
    assert_dciodvfy_clean(path)


def test_empty_slice_thickness_gets_the_spacing(tmp_path, series, labels):
    _, datasets = series
    thin = [copy.deepcopy(ds) for ds in datasets]
    for ds in thin:
        ds.SliceThickness = None
    path = write(thin, label_map((6, 24, 20)), labels, tmp_path / "seg.dcm")
    measures = pydicom.dcmread(path).SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SliceThickness) == pytest.approx(2.5)
    assert_dciodvfy_clean(path)


def test_pydicom_ct5n_series(tmp_path):
    """A real CT series (5 slices, 16 x 16, files named against slice order): nothing missing for highdicom."""
    datasets = sorted_by_normal([pydicom.dcmread(p) for p in sorted(CT5N.iterdir())])
    assert [Path(ds.filename).name for ds in datasets] != sorted(p.name for p in CT5N.iterdir())  # names run -z
    assert source_tag_problems(datasets) == []
    mask = np.zeros((5, 16, 16), np.uint8)
    mask[1:4, 3:9, 6:12] = 1
    mask[4, 0:2, 14:16] = 2
    labels = labels_from_dicts([{"value": 1, "name": "lesion"}, {"value": 2, "name": "nodule"}])
    path = write(datasets, mask, labels, tmp_path / "ct5n_seg.dcm")
    np.testing.assert_array_equal(read_back(path, datasets, labels), mask)
    seg = hd.seg.segread(path)
    assert seg.FrameOfReferenceUID == datasets[0].FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == datasets[0].SeriesInstanceUID
    assert seg.get_segment_description(1).segmented_property_type.value == "52988006"  # SNOMED CT Lesion
    assert_dciodvfy_clean(path)


def test_validate_with_dciodvfy_reports_errors(tmp_path, series, labels, monkeypatch):
    _, datasets = series
    path = write(datasets, label_map((6, 24, 20)), labels, tmp_path / "seg.dcm")
    if validate_with_dciodvfy(path) is None:
        pytest.skip("dciodvfy not installed (Debian package dicom3tools; `make test` installs it)")
    assert validate_with_dciodvfy(path) == []
    broken = pydicom.dcmread(path)
    del broken.SegmentSequence[0].SegmentLabel  # Type 1 in the Segment Description macro
    broken.save_as(tmp_path / "broken.dcm", enforce_file_format=True)
    errors = validate_with_dciodvfy(tmp_path / "broken.dcm")
    assert errors and all(e.startswith("Error") for e in errors) and any("SegmentLabel" in e for e in errors)
    monkeypatch.setattr("shutil.which", lambda name: None)
    assert validate_with_dciodvfy(path) is None


def test_bool_and_signed_masks(tmp_path, series, labels):
    _, datasets = series
    binary = label_map((6, 24, 20)) == 4
    path = write(datasets, binary, [LabelInfo(1, "LV")], tmp_path / "bool.dcm")
    np.testing.assert_array_equal(read_back(path, datasets, [LabelInfo(1, "LV")]), binary.astype(np.uint8))
    signed = label_map((6, 24, 20)).astype(np.int16)
    np.testing.assert_array_equal(read_back(write(datasets, signed, labels, tmp_path / "i16.dcm"), datasets, labels),
                                  signed)  # fmt: skip
    signed[0, 0, 0] = -2
    with pytest.raises(ValueError, match=r"mask values \[-2\]"):
        write(datasets, signed, labels, tmp_path / "neg.dcm")


# ------------------------------------------------------------------------------------------- patient data (issue 8)


def with_values(datasets: list, **values) -> list:
    """Deep copies of the slices with the given attribute values (pydicom's warnings about them silenced)."""
    copies = [copy.deepcopy(ds) for ds in datasets]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for ds in copies:
            for keyword, value in values.items():
                setattr(ds, keyword, value)
    return copies


@pytest.mark.parametrize("keyword, value", [("PatientBirthDate", "1945-03-17"), ("PatientSex", "Female"),
                                            ("StudyTime", "12:30:00"), ("PatientAge", "45 years"),
                                            ("PatientID", "MRN-" + "4" * 70)])  # fmt: skip
def test_invalid_patient_values_are_written_empty_and_never_quoted(tmp_path, series, labels, caplog, keyword, value):
    """The issue's case: an invalid type 2 value made the writer fail with the value in its message. Now the SEG
    is written with the attribute empty, the log names the keyword and a count, and the caller's slices keep it."""
    _, datasets = series
    hostile = with_values(datasets, **{keyword: value})
    mask = label_map((6, 24, 20))
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    path = write(hostile, mask, labels, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(path)
    assert seg[keyword].value in ("", None) and value.encode() not in path.read_bytes()
    assert seg.PatientName == "Synthetic^Phantom" or keyword == "PatientName"  # valid values are kept
    np.testing.assert_array_equal(read_back(path, hostile, labels), mask)
    assert f"DICOM SEG: source {keyword} " in caplog.text and "in 6 of 6 images: written empty" in caplog.text
    assert value not in caplog.text
    assert all(str(getattr(ds, keyword)) == value for ds in hostile)  # the caller's datasets are not changed
    if dciodvfy_messages(path) is not None:  # empty type 2 attributes keep the SEG valid
        assert_dciodvfy_clean(path)


def test_unexpected_errors_are_redacted(tmp_path, series, labels, monkeypatch):
    """An error from highdicom that quotes patient values reaches the caller with the values redacted, the keyword
    named, and no chained original in its traceback."""
    _, datasets = series

    def failing(**kwargs):
        src = kwargs["source_images"][0]
        raise ValueError(f"cannot handle {str(src.PatientName)!r} ({src.PatientID})")

    monkeypatch.setattr(hd.seg, "Segmentation", failing)
    with pytest.raises(ValueError) as info:
        write(datasets, label_map((6, 24, 20)), labels, tmp_path / "seg.dcm")
    message = str(info.value)
    assert message.startswith("cannot write the DICOM SEG: ValueError: cannot handle '<redacted>' (<redacted>)")
    assert "PatientID" in message and "PatientName" in message
    text = "".join(traceback.format_exception(info.value))
    assert "Synthetic" not in text and "SYN0001" not in text and "Phantom" not in text
    assert list(tmp_path.iterdir()) == []


def test_valid_name_without_caret_is_kept_but_not_logged(tmp_path, series, labels, caplog):
    """highdicom logs a warning quoting any patient name without a caret; the writer redacts it."""
    _, datasets = series
    named = with_values(datasets, PatientName="Anonymous Person")
    caplog.clear()
    caplog.set_level(logging.DEBUG)
    path = write(named, label_map((6, 24, 20)), labels, tmp_path / "seg.dcm")
    assert pydicom.dcmread(path).PatientName == "Anonymous Person"
    assert "Anonymous" not in caplog.text and "<redacted>" in caplog.text
