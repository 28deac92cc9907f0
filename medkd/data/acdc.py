# SPDX-License-Identifier: Apache-2.0
"""ACDC in the SSL4MIS layout: list files, the labelled/unlabelled split by patient, slice and volume datasets.

Layout (spec ``bcp.md`` §3): ``<root>/data/slices/<patientXXX_frameYY>_slice_<k>.h5`` holds one training
slice (``image`` float32 (H, W) in [0, 1], ``label`` uint8 (H, W) in {0..3}); ``<root>/data/<volume>.h5``
holds a volume (``image``, ``label`` shaped (S, H, W)); ``<root>/{train_slices,train,val,test,all_slices}.list``
name them without ``.h5``.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic import write_synthetic_acdc
    >>> root = write_synthetic_acdc(tempfile.mkdtemp(), n_train=3, n_val=1, n_test=1, n_slices=2, size=16)
    >>> labelled, unlabelled = acdc_labeled_split(root, 1)
    >>> len(labelled), len(unlabelled)
    (2, 4)
    >>> ACDCSliceDataset(root, labelled)[0]["image"].shape
    torch.Size([1, 16, 16])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from medkd.errors import DataError
from medkd.keys import Keys

__all__ = [
    "check_h5_headers",
    "ACDC_CLASSES",
    "PATIENTS_TO_SLICES",
    "REAL_TRAIN_SLICES",
    "read_list",
    "patient_of",
    "acdc_labeled_split",
    "read_h5_pair",
    "check_files_exist",
    "ACDCSliceDataset",
    "ACDCVolumeDataset",
]

logger = logging.getLogger(__name__)

ACDC_CLASSES: tuple[str, ...] = ("background", "RV", "Myo", "LV")
#: labelled patients -> labelled slices, from the reference's ``patients_to_slices`` (real list only)
PATIENTS_TO_SLICES: dict[int, int] = {1: 32, 3: 68, 7: 136, 14: 256, 21: 396, 28: 512, 35: 664, 70: 1312}
#: line count of the real SSL4MIS ``train_slices.list``
REAL_TRAIN_SLICES = 1312


def read_list(path: str | Path) -> list[str]:
    """Read a ``.list`` file: one name per line, blank lines and surrounding whitespace dropped.

    Args:
        path: the list file.

    Returns:
        The names, in file order.

    Raises:
        DataError: if the file is missing, unreadable or holds no names.

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "val.list"
        >>> _ = p.write_text("a\\n\\nb\\n")
        >>> read_list(p)
        ['a', 'b']
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "list file not found")
    try:
        names = [line.strip() for line in path.read_text().splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(path, f"cannot read list file ({exc})") from exc
    names = [name for name in names if name]
    if not names:
        raise DataError(path, "list file is empty")
    return names


def patient_of(name: str) -> str:
    """The patient a slice or volume name belongs to: the prefix before ``_frame`` (or ``_slice``).

    Example:
        >>> patient_of("patient099_frame01_slice_3")
        'patient099'
    """
    for marker in ("_frame", "_slice"):
        if marker in name:
            return name.split(marker, 1)[0]
    return name


def acdc_labeled_split(root: str | Path, labeled_patients: int) -> tuple[list[str], list[str]]:
    """Split ``train_slices.list`` into labelled and unlabelled slice names, by patient.

    The labelled set is the first N lines. On the real 1312-line list N comes from
    :data:`PATIENTS_TO_SLICES` (as in the reference, e.g. 3 patients -> 68 slices); otherwise N is the
    number of lines of the first ``labeled_patients`` distinct patients.

    Args:
        root: the ACDC root holding ``train_slices.list``.
        labeled_patients: number of labelled patients (>= 1).

    Returns:
        ``(labelled, unlabelled)`` slice names, in list order.

    Raises:
        DataError: if the list is missing or empty, ``labeled_patients < 1``, or it exceeds the patients
            in the list.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_acdc
        >>> root = write_synthetic_acdc(tempfile.mkdtemp(), n_train=2, n_val=0, n_test=0, n_slices=2, size=16)
        >>> [len(part) for part in acdc_labeled_split(root, 2)]
        [4, 0]
    """
    list_path = Path(root) / "train_slices.list"
    names = read_list(list_path)
    patients = list(dict.fromkeys(patient_of(name) for name in names))
    if labeled_patients < 1:
        raise DataError(list_path, f"labeled_patients must be >= 1 (an empty labelled set), got {labeled_patients}")
    if labeled_patients > len(patients):
        raise DataError(list_path, f"asked for {labeled_patients} labelled patients, the list has {len(patients)}")
    if len(names) == REAL_TRAIN_SLICES and labeled_patients in PATIENTS_TO_SLICES:
        n_labeled = PATIENTS_TO_SLICES[labeled_patients]
    else:
        chosen = set(patients[:labeled_patients])
        n_labeled = next((i for i, name in enumerate(names) if patient_of(name) not in chosen), len(names))
        stray = [name for name in names[n_labeled:] if patient_of(name) in chosen]
        if stray:
            raise DataError(list_path, f"slices of one patient are not consecutive (e.g. {stray[0]!r})")
    logger.info("ACDC split: %d labelled patients -> %d labelled / %d unlabelled slices", labeled_patients,
                n_labeled, len(names) - n_labeled)
    return names[:n_labeled], names[n_labeled:]


def check_files_exist(paths: Sequence[Path], what: str = "listed files") -> None:
    """Raise one :class:`DataError` naming the first few missing files, if any is missing.

    Raises:
        DataError: naming the first missing file, with a count and up to five names.
    """
    missing = [p for p in paths if not p.is_file()]
    if missing:
        shown = ", ".join(p.name for p in missing[:5])
        raise DataError(missing[0], f"file not found ({len(missing)} of {len(paths)} {what} missing; first: {shown})")


def read_h5_pair(path: Path, ndim: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Read and validate ``image`` and ``label`` from an h5 file.

    Args:
        path: the h5 file.
        ndim: expected number of dimensions of both arrays.
        num_classes: labels must lie in ``[0, num_classes)``.

    Returns:
        ``(image float32, label uint8)`` with equal shapes.

    Raises:
        DataError: naming ``path`` for a missing or unreadable file, a missing key, a wrong number of
            dimensions, a shape mismatch, or labels out of range.
    """
    if not path.is_file():
        raise DataError(path, "file not found")
    try:
        with h5py.File(path, "r") as f:
            _check_header(f, path, ndim)
            image = np.asarray(f[Keys.IMAGE][()])
            label = np.asarray(f[Keys.LABEL][()])
    except OSError as exc:
        raise DataError(path, f"unreadable h5 file ({exc})") from exc
    if label.size and (label.min() < 0 or label.max() >= num_classes):
        raise DataError(path, f"labels must lie in [0, {num_classes}), found [{label.min()}, {label.max()}]")
    if not np.issubdtype(label.dtype, np.integer):
        if not np.all(np.mod(label, 1) == 0):
            raise DataError(path, f"label holds non-integer values (dtype {label.dtype})")
    return image.astype(np.float32, copy=False), label.astype(np.uint8, copy=False)


def check_h5_headers(paths: Sequence[Path], ndim: int) -> None:
    """Check every h5 file's structure (keys, dimensions, equal shapes) from its header, without reading data.

    Run once before training so a malformed file anywhere in a split is reported before the first iteration,
    not whenever the sampler first draws it.

    Raises:
        DataError: naming the first bad file and its problem.
    """
    for path in paths:
        try:
            with h5py.File(path, "r") as f:
                _check_header(f, path, ndim)
        except OSError as exc:
            raise DataError(path, f"unreadable h5 file ({exc})") from exc


def _check_header(f: h5py.File, path: Path, ndim: int) -> None:
    """Keys ``image``/``label`` present, ``ndim``-D, equal shapes: read from the datasets' headers only."""
    for key in (Keys.IMAGE, Keys.LABEL):
        if key not in f:
            raise DataError(path, f"missing key {str(key)!r} (found {sorted(f.keys())})")
    shapes = {str(key): tuple(f[key].shape) for key in (Keys.IMAGE, Keys.LABEL)}
    for key, shape in shapes.items():
        if len(shape) != ndim:
            raise DataError(path, f"{key!r} must be {ndim}D, got shape {shape}")
    if shapes["image"] != shapes["label"]:
        raise DataError(path, f"image shape {shapes['image']} differs from label shape {shapes['label']}")


class ACDCSliceDataset(Dataset):
    """Training slices ``<root>/data/slices/<name>.h5`` as tensors.

    Each item is ``{"image": float32 (1, H, W), "label": int64 (H, W), "case": name}``, then ``transform``.

    Args:
        root: the ACDC root.
        names: slice names without ``.h5`` (e.g. from :func:`acdc_labeled_split`).
        transform: optional callable on the item dict (e.g. :func:`medkd.data.acdc_train_transform`).
        num_classes: labels must lie in ``[0, num_classes)``.
        cache: keep decoded arrays in memory after the first read (per DataLoader worker).

    Raises:
        DataError: at construction if a listed file is missing; at read time for a malformed file.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_acdc
        >>> root = write_synthetic_acdc(tempfile.mkdtemp(), n_train=1, n_val=0, n_test=0, n_slices=2, size=16)
        >>> item = ACDCSliceDataset(root, ["patient001_frame01_slice_0"])[0]
        >>> item["label"].dtype, item["case"]
        (torch.int64, 'patient001_frame01_slice_0')
    """

    def __init__(
        self,
        root: str | Path,
        names: Sequence[str],
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        num_classes: int = 4,
        cache: bool = False,
    ) -> None:
        self.root = Path(root)
        self.names = list(names)
        self.transform = transform
        self.num_classes = num_classes
        self.cache = cache
        self._cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        check_files_exist([self.path(i) for i in range(len(self.names))], "listed slice files")

    def path(self, index: int) -> Path:
        """The h5 file of item ``index``."""
        return self.root / "data" / "slices" / f"{self.names[index]}.h5"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index in self._cache:
            image, label = self._cache[index]
        else:
            image, label = read_h5_pair(self.path(index), 2, self.num_classes)
            if self.cache:
                self._cache[index] = (image, label)
        item: dict[str, Any] = {
            Keys.IMAGE.value: torch.from_numpy(image.copy() if self.cache else image).unsqueeze(0),
            Keys.LABEL.value: torch.from_numpy(label.astype(np.int64)),
            Keys.CASE.value: self.names[index],
        }
        return self.transform(item) if self.transform is not None else item


class ACDCVolumeDataset(Dataset):
    """Validation/test volumes ``<root>/data/<name>.h5`` named by ``<root>/<split>.list``, as numpy arrays.

    Each item is ``{"image": np.float32 (S, H, W), "label": np.uint8 (S, H, W), "case": name}``.

    Args:
        root: the ACDC root.
        split: list file stem: ``"val"``, ``"test"`` or ``"train"``.
        num_classes: labels must lie in ``[0, num_classes)``.

    Raises:
        DataError: if the list is missing/empty or a listed volume is missing (at construction), or a
            volume is malformed (at read time).

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_acdc
        >>> root = write_synthetic_acdc(tempfile.mkdtemp(), n_train=1, n_val=1, n_test=0, n_slices=2, size=16)
        >>> ACDCVolumeDataset(root, "val")[0]["image"].shape
        (2, 16, 16)
    """

    def __init__(self, root: str | Path, split: str = "val", num_classes: int = 4) -> None:
        self.root = Path(root)
        self.split = split
        self.num_classes = num_classes
        self.names = read_list(self.root / f"{split}.list")
        check_files_exist([self.path(i) for i in range(len(self.names))], f"volumes of {split}.list")

    def path(self, index: int) -> Path:
        """The h5 file of item ``index``."""
        return self.root / "data" / f"{self.names[index]}.h5"

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int) -> dict[str, Any]:
        image, label = read_h5_pair(self.path(index), 3, self.num_classes)
        return {Keys.IMAGE.value: image, Keys.LABEL.value: label, Keys.CASE.value: self.names[index]}
