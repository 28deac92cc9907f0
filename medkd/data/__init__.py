# SPDX-License-Identifier: Apache-2.0
"""Datasets in the public formats (ACDC SSL4MIS h5, LA UA-MT h5, NIfTI datalists), synthetic generators that
write those layouts, BCP training augmentation and the two-stream batch sampler. Surgical video (Cholec80,
CholecT50, 1-fps decoding, clip windows, the feature cache) is in :mod:`medkd.data.surgical`, imported on its own
(it needs OpenCV)."""

from __future__ import annotations

from medkd.data.acdc import (
    ACDC_CLASSES,
    PATIENTS_TO_SLICES,
    ACDCSliceDataset,
    ACDCVolumeDataset,
    acdc_labeled_split,
    patient_of,
    read_list,
)
from medkd.data.la import LA_CLASSES, LAVolumeDataset, la_case_path, la_split, la_test_ids
from medkd.data.nifti import NiftiSegDataset, case_name, load_datalist
from medkd.data.sampler import TwoStreamBatchSampler, infinite_batches
from medkd.data.synthetic import (
    make_atrium_volume,
    make_cardiac_volume,
    write_synthetic_acdc,
    write_synthetic_la,
    write_synthetic_nifti,
)
from medkd.data.transforms import (
    RandIntRotated,
    RandOneOfd,
    RandPadCropd,
    RandRot90Flipd,
    ResizeNearestd,
    acdc_train_transform,
    la_train_transform,
)

__all__ = [
    "ACDC_CLASSES",
    "PATIENTS_TO_SLICES",
    "ACDCSliceDataset",
    "ACDCVolumeDataset",
    "acdc_labeled_split",
    "patient_of",
    "read_list",
    "LA_CLASSES",
    "LAVolumeDataset",
    "la_case_path",
    "la_split",
    "la_test_ids",
    "NiftiSegDataset",
    "case_name",
    "load_datalist",
    "TwoStreamBatchSampler",
    "infinite_batches",
    "make_atrium_volume",
    "make_cardiac_volume",
    "write_synthetic_acdc",
    "write_synthetic_la",
    "write_synthetic_nifti",
    "RandIntRotated",
    "RandOneOfd",
    "RandPadCropd",
    "RandRot90Flipd",
    "ResizeNearestd",
    "acdc_train_transform",
    "la_train_transform",
]
