# SPDX-License-Identifier: Apache-2.0
"""Users' own NIfTI data: datalists from MSD ``dataset.json`` files or plain folders, and a dataset over them.

Three layouts are accepted by :func:`load_datalist`:

* an MSD-style ``dataset.json`` (or a folder holding one): ``{"training": [{"image": ..., "label": ...}],
  "test": ["./imagesTs/x.nii.gz", ...]}`` with paths relative to the json's folder;
* a folder with ``imagesTr/`` and ``labelsTr/`` (``imagesTs/`` for ``split="test"``), matched by file name;
  nnU-Net's ``_0000`` channel suffix on image names is understood;
* a folder of ``<case>_image.nii[.gz]`` / ``<case>_label.nii[.gz]`` pairs.

Arrays are read with SimpleITK in ``(z, y, x)`` order, the same order as :func:`medkd.io.read_volume`, so a
model trained on a datalist sees inputs laid out as ``medkd bcp predict`` will give them.

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic import write_synthetic_nifti
    >>> root = write_synthetic_nifti(tempfile.mkdtemp(), n=2, shape=(8, 16, 16))
    >>> items = load_datalist(root / "dataset.json")
    >>> ds = NiftiSegDataset(items)
    >>> ds[0]["image"].shape, ds[0]["label"].dtype, ds[0]["case"]
    (torch.Size([1, 8, 16, 16]), torch.int64, 'case_000')
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medkd.errors import DataError
from medkd.io.volume_io import read_volume, strip_suffix
from medkd.keys import Keys

__all__ = ["NIFTI_SUFFIXES", "load_datalist", "case_name", "NiftiSegDataset"]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii")
_FOLDERS = {"training": ("imagesTr", "labelsTr"), "test": ("imagesTs", "labelsTs")}
_CHANNEL = re.compile(r"_\d{4}$")


def case_name(path: str | Path) -> str:
    """The case a file belongs to: its name without ``.nii[.gz]``, ``_image``/``_label`` or ``_0000``.

    Example:
        >>> case_name("a/case_001_0000.nii.gz"), case_name("b/p7_image.nii"), case_name("c/x.nii.gz")
        ('case_001', 'p7', 'x')
    """
    stem = strip_suffix(Path(path).name)
    for tail in ("_image", "_label"):
        if stem.endswith(tail):
            return stem[: -len(tail)]
    return _CHANNEL.sub("", stem)


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(NIFTI_SUFFIXES)


def _from_json(json_path: Path, split: str) -> list[dict[str, str]]:
    try:
        meta = json.loads(json_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(json_path, f"cannot read datalist json ({exc})") from exc
    if not isinstance(meta, dict) or split not in meta:
        keys = sorted(meta) if isinstance(meta, dict) else type(meta).__name__
        raise DataError(json_path, f"no {split!r} entry in datalist (found {keys})")
    if not isinstance(meta[split], list):
        raise DataError(json_path, f"{split!r} must be a list of entries")
    base = json_path.parent
    items: list[dict[str, str]] = []
    for i, entry in enumerate(meta[split]):
        if isinstance(entry, str):
            entry = {Keys.IMAGE.value: entry}
        if not isinstance(entry, Mapping) or Keys.IMAGE.value not in entry:
            raise DataError(json_path, f"{split}[{i}] has no 'image' path")
        items.append({k: str((base / v).resolve()) for k, v in entry.items() if isinstance(v, str)})
    if split == "training":
        no_label = [item[Keys.IMAGE.value] for item in items if Keys.LABEL.value not in item]
        if no_label:
            raise DataError(no_label[0], f"training image without 'label' in {json_path}")
    return items


def _from_folders(root: Path, split: str) -> list[dict[str, str]]:
    if split not in _FOLDERS:
        raise DataError(root, f"a folder datalist has splits {sorted(_FOLDERS)}, got {split!r}")
    image_dir_name, label_dir_name = _FOLDERS[split]
    image_dir, label_dir = root / image_dir_name, root / label_dir_name
    if not image_dir.is_dir():
        raise DataError(image_dir, f"folder not found (split {split!r})")
    labels = {case_name(p): p for p in label_dir.iterdir() if _is_nifti(p)} if label_dir.is_dir() else {}
    items = []
    for image in sorted(p for p in image_dir.iterdir() if _is_nifti(p)):
        item = {Keys.IMAGE.value: str(image.resolve())}
        label = label_dir / image.name if (label_dir / image.name).is_file() else labels.get(case_name(image))
        if label is not None:
            item[Keys.LABEL.value] = str(label.resolve())
        elif split == "training":
            raise DataError(image, f"image has no label in {label_dir} (expected {label_dir / image.name})")
        items.append(item)
    return items


def _from_pairs(root: Path) -> list[dict[str, str]]:
    files = sorted(p for p in root.iterdir() if _is_nifti(p))
    images = [p for p in files if strip_suffix(p.name).endswith("_image")]
    labels = {case_name(p): p for p in files if strip_suffix(p.name).endswith("_label")}
    items = []
    for image in images:
        label = labels.get(case_name(image))
        if label is None:
            raise DataError(image, f"image has no matching {case_name(image)}_label.nii[.gz] in {root}")
        items.append({Keys.IMAGE.value: str(image.resolve()), Keys.LABEL.value: str(label.resolve())})
    return items


def load_datalist(path: str | Path, split: str = "training") -> list[dict[str, str]]:
    """Build a datalist ``[{"image": abs_path, "label": abs_path}, ...]`` from a json or a folder.

    A folder holding ``dataset.json`` is read through the json. Test entries may lack ``label``.

    Args:
        path: a ``dataset.json``, or a folder in one of the layouts of this module's docstring.
        split: the json key or folder set: ``"training"`` (labels required), ``"test"``, or another json key.

    Returns:
        Entries with absolute paths, in json order or sorted by file name.

    Raises:
        DataError: if ``path`` is missing, the json is malformed or lacks ``split``, a listed file does not
            exist, a training image has no label, or the datalist is empty.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_nifti
        >>> root = write_synthetic_nifti(tempfile.mkdtemp(), n=2, shape=(8, 16, 16), msd=False)
        >>> [sorted(d) for d in load_datalist(root)]
        [['image', 'label'], ['image', 'label']]
    """
    path = Path(path)
    if path.is_dir() and (path / "dataset.json").is_file():
        path = path / "dataset.json"
    if path.is_file():
        items = _from_json(path, split)
    elif path.is_dir():
        has_folders = (path / "imagesTr").is_dir() or (path / "imagesTs").is_dir()
        items = _from_folders(path, split) if has_folders else _from_pairs(path)
    else:
        raise DataError(path, "datalist file or folder not found")
    for item in items:
        for key, value in item.items():
            if key in (Keys.IMAGE.value, Keys.LABEL.value) and not Path(value).is_file():
                raise DataError(value, f"{key} file listed in {path} not found")
    if not items:
        raise DataError(path, f"datalist is empty (split {split!r})")
    logger.info("datalist %s (%s): %d cases", path, split, len(items))
    return items


class NiftiSegDataset(Dataset):
    """Image/label volumes from a datalist, as tensors in ``(z, y, x)`` order.

    Each item is ``{"image": float32 (1, z, y, x), "label": int64 (z, y, x), "case": name}`` (no ``label``
    for unlabelled entries), then ``transform``.

    Args:
        datalist: entries as from :func:`load_datalist`, or a path passed to it.
        transform: optional callable on the item dict.
        num_classes: if given, labels must lie in ``[0, num_classes)``.
        split: the split read when ``datalist`` is a path.

    Raises:
        DataError: for an unreadable file, non-integer or out-of-range labels, or an image/label shape
            mismatch (naming both files).

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_nifti
        >>> root = write_synthetic_nifti(tempfile.mkdtemp(), n=1, shape=(8, 16, 16))
        >>> len(NiftiSegDataset(root, num_classes=2))
        1
    """

    def __init__(
        self,
        datalist: Sequence[Mapping[str, str]] | str | Path,
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        num_classes: int | None = None,
        split: str = "training",
    ) -> None:
        if isinstance(datalist, (str, Path)):
            datalist = load_datalist(datalist, split)
        self.items = [dict(item) for item in datalist]
        self.transform = transform
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        entry = self.items[index]
        image_path = Path(entry[Keys.IMAGE.value])
        image = read_volume(image_path).array
        item: dict[str, Any] = {
            Keys.IMAGE.value: torch.from_numpy(np.ascontiguousarray(image)).unsqueeze(0),
            Keys.CASE.value: case_name(image_path),
        }
        if Keys.LABEL.value in entry:
            label_path = Path(entry[Keys.LABEL.value])
            label = read_volume(label_path).array
            if label.shape != image.shape:
                raise DataError(
                    label_path, f"label shape {label.shape} differs from image shape {image.shape} of {image_path}"
                )
            if not np.all(np.mod(label, 1) == 0):
                raise DataError(label_path, "label holds non-integer values")
            if self.num_classes is not None and label.size and (label.min() < 0 or label.max() >= self.num_classes):
                raise DataError(
                    label_path, f"labels must lie in [0, {self.num_classes}), found [{label.min():g}, {label.max():g}]"
                )
            item[Keys.LABEL.value] = torch.from_numpy(label.astype(np.int64))
        return self.transform(item) if self.transform is not None else item
