# SPDX-License-Identifier: Apache-2.0
"""The data a BCP run needs: labelled and unlabelled training sets, validation cases, infinite loaders."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, RandomSampler

from medkd.data.acdc import ACDCSliceDataset, ACDCVolumeDataset, acdc_labeled_split, check_h5_headers
from medkd.data.la import LAVolumeDataset, la_case_path, la_split, la_test_ids
from medkd.data.nifti import NiftiSegDataset, load_datalist
from medkd.data.sampler import TwoStreamBatchSampler, infinite_batches
from medkd.data.transforms import acdc_train_transform, la_train_transform
from medkd.data.transforms import normalise_intensity as normalise
from medkd.errors import DataError
from medkd.methods.bcp.config import BCPConfig
from medkd.methods.bcp.config import Dataset as DatasetName

__all__ = ["RunData", "build_run_data", "eval_cases", "labeled_loader", "normalise", "two_stream_loader", "zscore_image"]


@dataclass
class RunData:
    """Training sets of one run and the names of its validation cases."""

    labeled: Dataset
    unlabeled: Dataset
    val_split: str
    val_ids: list[str] | None  # LA ``train_tail`` ids; None = read ``<split>.list``


def build_run_data(cfg: BCPConfig, root: Path) -> RunData:
    """Open (and validate) the labelled/unlabelled sets of ``cfg`` under ``root``.

    Raises:
        DataError: missing folder, list or file; malformed h5; empty labelled set.
    """
    root = Path(root)
    if cfg.dataset == DatasetName.NIFTI:
        return _nifti_run_data(cfg, root)  # a dataset.json or a folder; load_datalist names what is missing
    if not root.is_dir():
        raise DataError(root, "data root is not a folder (see datasets/acdc/README.md or datasets/la/README.md)")
    val_split = cfg.resolved_val_split()
    if cfg.dataset == DatasetName.ACDC:
        labeled, unlabeled = acdc_labeled_split(root, cfg.labeled)
        tf = acdc_train_transform(cfg.patch)
        data = RunData(
            ACDCSliceDataset(root, labeled, tf, num_classes=cfg.num_classes),
            ACDCSliceDataset(root, unlabeled, tf, num_classes=cfg.num_classes),
            val_split,
            None,
        )
        check_h5_headers([ds.path(i) for ds in (data.labeled, data.unlabeled) for i in range(len(ds))], ndim=2)
        return data
    tail = cfg.val_from_train if val_split == "train_tail" else 0
    labeled, unlabeled, val = la_split(root, cfg.labeled, val_from_train=tail)
    check_h5_headers([la_case_path(root, case) for case in labeled + unlabeled + val], ndim=3)
    tf = la_train_transform(cfg.patch)
    return RunData(
        LAVolumeDataset(root, labeled, tf, num_classes=cfg.num_classes),
        LAVolumeDataset(root, unlabeled, tf, num_classes=cfg.num_classes),
        val_split,
        val if val_split == "train_tail" else None,
    )


def zscore_image(item: dict) -> dict:
    """Z-score the item's image tensor per volume (raw NIfTI intensities -> the LA h5 convention)."""
    return {**item, "image": torch.from_numpy(normalise(_np(item["image"]), "zscore"))}


def _nifti_split(cfg: BCPConfig, root: Path) -> tuple[list[dict], list[dict], list[dict]]:
    entries = [e for e in load_datalist(root, "training") if e.get("label")]
    n_val = cfg.val_from_train
    if cfg.labeled + n_val > len(entries):
        raise DataError(root, f"{len(entries)} labelled training entries; need labeled={cfg.labeled} plus "
                              f"val_from_train={n_val} validation entries")
    train, val = entries[: len(entries) - n_val], entries[len(entries) - n_val :]
    return train[: cfg.labeled], train[cfg.labeled :], val


def _nifti_run_data(cfg: BCPConfig, root: Path) -> RunData:
    labeled, unlabeled, _ = _nifti_split(cfg, root)
    augment = la_train_transform(cfg.patch)

    def tf(item: dict) -> dict:
        return augment(zscore_image(item))

    unlabeled = [{"image": e["image"]} for e in unlabeled]  # unlabelled: the labels are never read
    return RunData(
        NiftiSegDataset(labeled, tf, num_classes=cfg.num_classes),
        NiftiSegDataset(unlabeled, lambda item: tf({**item, "label": torch.zeros(item["image"].shape[1:], dtype=torch.int64)})),
        "train_tail",
        None,
    )


def eval_cases(cfg: BCPConfig, root: Path, split: str, ids: list[str] | None = None) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    """Yield ``(case, image, label)`` numpy volumes of a split: ACDC ``(S, H, W)``, LA ``(W, H, D)``, NIfTI
    ``(z, y, x)`` (``split``: ``val`` = the validation tail, else a datalist split such as ``training``)."""
    root = Path(root)
    if cfg.dataset == DatasetName.NIFTI:
        entries = _nifti_split(cfg, root)[2] if split in ("val", "train_tail") else load_datalist(root, split)
        for item in NiftiSegDataset([e for e in entries if e.get("label")], zscore_image, num_classes=cfg.num_classes):
            yield item["case"], _np(item["image"])[0], _np(item["label"])
        return
    if cfg.dataset == DatasetName.ACDC:
        for item in ACDCVolumeDataset(root, split, num_classes=cfg.num_classes):
            yield item["case"], np.asarray(item["image"]), np.asarray(item["label"])
        return
    names = ids if ids is not None else la_test_ids(root, split)
    for item in LAVolumeDataset(root, names, None, num_classes=cfg.num_classes):
        yield item["case"], _np(item["image"])[0], _np(item["label"])


def _np(x: Any) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _loader(dataset: Dataset, cfg: BCPConfig, **kwargs: Any) -> DataLoader:
    workers = cfg.num_workers
    return DataLoader(
        dataset,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        worker_init_fn=_seed_worker,
        **kwargs,
    )


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    import random

    random.seed(seed)


def labeled_loader(data: RunData, cfg: BCPConfig, seed: int) -> Iterator[dict]:
    """Infinite batches of ``labeled_batch_size`` labelled items (pre-training, supervised baseline)."""
    g = torch.Generator().manual_seed(seed)
    sampler = RandomSampler(data.labeled, generator=g)
    if len(data.labeled) < cfg.labeled_batch_size:
        sampler = RandomSampler(data.labeled, replacement=True, num_samples=cfg.labeled_batch_size, generator=g)
    return infinite_batches(_loader(data.labeled, cfg, sampler=sampler, batch_size=cfg.labeled_batch_size, drop_last=True))


def two_stream_loader(data: RunData, cfg: BCPConfig, seed: int) -> Iterator[dict]:
    """Infinite batches: ``labeled_batch_size`` labelled items then the unlabelled rest (self-training)."""
    n_lab, n_unl = len(data.labeled), len(data.unlabeled)
    if n_unl < cfg.batch_size - cfg.labeled_batch_size:
        raise DataError("unlabelled set", f"{n_unl} items, fewer than the unlabelled batch part")
    if n_lab < cfg.labeled_batch_size:
        raise DataError("labelled set", f"{n_lab} items, fewer than labeled_batch_size={cfg.labeled_batch_size}; "
                                        "label more cases (labeled=...) or lower labeled_batch_size")
    sampler = TwoStreamBatchSampler(
        list(range(n_lab)), list(range(n_lab, n_lab + n_unl)), cfg.batch_size, cfg.batch_size - cfg.labeled_batch_size,
        seed=seed,
    )
    return infinite_batches(_loader(ConcatDataset([data.labeled, data.unlabeled]), cfg, batch_sampler=sampler))
