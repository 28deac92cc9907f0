# SPDX-License-Identifier: Apache-2.0
"""Left Atrium (2018 LA Segmentation Challenge) in the UA-MT layout: lists, splits and the volume dataset.

Layout (spec ``bcp.md`` §3): ``<root>/2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` float32
(W, H, D) z-scored and ``label`` uint8 {0, 1}; ``<root>/train.list`` (80 IDs) and ``<root>/test.list`` (20).

Example:
    >>> import tempfile
    >>> from medkd.data.synthetic import write_synthetic_la
    >>> root = write_synthetic_la(tempfile.mkdtemp(), n_train=4, n_test=1, shape=(16, 16, 12))
    >>> labelled, unlabelled, val = la_split(root, 1, val_from_train=1)
    >>> len(labelled), len(unlabelled), len(val)
    (1, 2, 1)
    >>> LAVolumeDataset(root, labelled)[0]["image"].shape
    torch.Size([1, 16, 16, 12])
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from medkd.data.acdc import check_files_exist, read_h5_pair, read_list
from medkd.errors import DataError
from medkd.keys import Keys

__all__ = ["LA_CLASSES", "LA_TRAINING_DIR", "la_case_path", "la_split", "la_test_ids", "LAVolumeDataset"]

logger = logging.getLogger(__name__)

LA_CLASSES: tuple[str, ...] = ("background", "left_atrium")
LA_TRAINING_DIR = "2018LA_Seg_Training Set"


def la_case_path(root: str | Path, case_id: str) -> Path:
    """The h5 file of one LA case: ``<root>/2018LA_Seg_Training Set/<case_id>/mri_norm2.h5``.

    Example:
        >>> la_case_path("/data/LA", "ABC").as_posix()
        '/data/LA/2018LA_Seg_Training Set/ABC/mri_norm2.h5'
    """
    return Path(root) / LA_TRAINING_DIR / case_id / "mri_norm2.h5"


def la_split(root: str | Path, labeled: int, *, val_from_train: int = 0) -> tuple[list[str], list[str], list[str]]:
    """Split ``train.list`` into labelled, unlabelled and (clean-mode) validation IDs.

    Labelled = the first ``labeled`` IDs (as in the reference); validation = the last ``val_from_train``
    IDs, taken from the unlabelled pool so that no test case selects checkpoints; unlabelled = the rest.

    Args:
        root: the LA root holding ``train.list``.
        labeled: labelled volumes (>= 1), e.g. 4 for 5% and 8 for 10%.
        val_from_train: validation volumes taken from the end of ``train.list``.

    Returns:
        ``(labelled, unlabelled, validation)`` ID lists.

    Raises:
        DataError: if the list is missing or empty, ``labeled < 1``, ``val_from_train < 0``, or
            ``labeled + val_from_train`` exceeds the IDs in the list.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_la
        >>> root = write_synthetic_la(tempfile.mkdtemp(), n_train=3, n_test=0, shape=(8, 8, 8))
        >>> [len(p) for p in la_split(root, 2)]
        [2, 1, 0]
    """
    list_path = Path(root) / "train.list"
    ids = read_list(list_path)
    if labeled < 1:
        raise DataError(list_path, f"labeled must be >= 1 (an empty labelled set), got {labeled}")
    if val_from_train < 0:
        raise DataError(list_path, f"val_from_train must be >= 0, got {val_from_train}")
    if labeled + val_from_train > len(ids):
        raise DataError(
            list_path, f"{labeled} labelled + {val_from_train} validation IDs requested, the list has {len(ids)}"
        )
    cut = len(ids) - val_from_train
    labelled, unlabelled, val = ids[:labeled], ids[labeled:cut], ids[cut:]
    if not unlabelled:
        logger.warning("LA split from %s leaves no unlabelled volumes", list_path)
    return labelled, unlabelled, val


def la_test_ids(root: str | Path, split: str = "test") -> list[str]:
    """The IDs in ``<root>/<split>.list``.

    Raises:
        DataError: if the list is missing or empty.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_la
        >>> root = write_synthetic_la(tempfile.mkdtemp(), n_train=1, n_test=2, shape=(8, 8, 8))
        >>> len(la_test_ids(root))
        2
    """
    return read_list(Path(root) / f"{split}.list")


class LAVolumeDataset(Dataset):
    """LA volumes as tensors: ``{"image": float32 (1, W, H, D), "label": int64 (W, H, D), "case": id}``.

    Args:
        root: the LA root.
        ids: case IDs (from :func:`la_split` or :func:`la_test_ids`).
        transform: optional callable on the item dict (e.g. :func:`medkd.data.la_train_transform`);
            without one the whole volume is returned.
        num_classes: labels must lie in ``[0, num_classes)``.

    Raises:
        DataError: at construction if a case file is missing; at read time for a malformed file.

    Example:
        >>> import tempfile
        >>> from medkd.data.synthetic import write_synthetic_la
        >>> root = write_synthetic_la(tempfile.mkdtemp(), n_train=1, n_test=0, shape=(8, 8, 8))
        >>> LAVolumeDataset(root, la_test_ids(root, "train"))[0]["label"].dtype
        torch.int64
    """

    def __init__(
        self,
        root: str | Path,
        ids: Sequence[str],
        transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        num_classes: int = 2,
    ) -> None:
        self.root = Path(root)
        self.ids = list(ids)
        self.transform = transform
        self.num_classes = num_classes
        check_files_exist([la_case_path(self.root, case_id) for case_id in self.ids], "LA case files")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, Any]:
        case_id = self.ids[index]
        image, label = read_h5_pair(la_case_path(self.root, case_id), 3, self.num_classes)
        item: dict[str, Any] = {
            Keys.IMAGE.value: torch.from_numpy(image).unsqueeze(0),
            Keys.LABEL.value: torch.from_numpy(label.astype(np.int64)),
            Keys.CASE.value: case_id,
        }
        return self.transform(item) if self.transform is not None else item
