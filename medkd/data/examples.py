# SPDX-License-Identifier: Apache-2.0
"""Bundled synthetic examples for the app: made on the fly with medkd.data's generators, deterministic, with their
ground truth, decoded as an upload would be (:class:`medkd.io.upload.LoadedImage`).

The DICOM examples are written as a series and read back through the upload's DICOM path, so DICOM SEG export
works for them as for uploads.

Example:
    >>> import tempfile
    >>> img = load_example("Synthetic CT phantom (DICOM)", tempfile.mkdtemp())
    >>> img.kind, img.modality, img.array.shape, img.ground_truth.shape
    ('dicom', 'CT', (24, 96, 96), (24, 96, 96))
"""

from __future__ import annotations

import difflib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from medkd.io.upload import LoadedImage, loaded_from_dicom, spacing_zyx

__all__ = ["EXAMPLES", "example_names", "load_example"]

_CARDIAC_SEED = 20_240  # the demo trains on default_rng([0, patient]); an integer seed never collides with those
_CT_SEED = 7
_ATRIUM_SEED = 11


def _cardiac_example(folder: Path) -> LoadedImage:
    from medkd.data.acdc import ACDC_CLASSES
    from medkd.data.synthetic import make_cardiac_volume
    from medkd.data.synthetic_dicom import write_dicom_series
    from medkd.io.dicom_volume import load_series_volume

    image, label = make_cardiac_volume(np.random.default_rng(_CARDIAC_SEED), n_slices=10, size=64)
    series = write_dicom_series(
        folder,
        pixels=np.round(image * 1000),
        mask=label,
        modality="MR",
        series_description="Synthetic cine SAX",
        pixel_spacing=(1.5, 1.5),
        slice_spacing=10.0,
        seed=_CARDIAC_SEED,
    )
    loaded = loaded_from_dicom(load_series_volume(series.paths), "", "", folder)
    loaded.ground_truth, loaded.ground_truth_names = series.mask, tuple(ACDC_CLASSES)
    return loaded


def _ct_example(folder: Path) -> LoadedImage:
    from medkd.data.synthetic_dicom import write_dicom_series
    from medkd.io.dicom_volume import load_series_volume

    series = write_dicom_series(
        folder, n_slices=24, rows=96, cols=96, seed=_CT_SEED, series_description="Synthetic CT phantom"
    )
    loaded = loaded_from_dicom(load_series_volume(series.paths), "", "", folder)
    loaded.ground_truth, loaded.ground_truth_names = series.mask, ("background", "ellipsoid")
    return loaded


def _atrium_example(folder: Path) -> LoadedImage:
    import SimpleITK as sitk

    from medkd.data.la import LA_CLASSES
    from medkd.data.synthetic import make_atrium_volume
    from medkd.io.volume_io import read_volume

    image, label = make_atrium_volume(np.random.default_rng(_ATRIUM_SEED), shape=(64, 64, 40))  # (W, H, D)
    nifti = sitk.GetImageFromArray(np.ascontiguousarray(image.transpose(2, 1, 0), dtype=np.float32))  # (z, y, x)
    nifti.SetSpacing((0.625, 0.625, 0.625))  # the LA challenge's voxel size
    path = folder / "atrium.nii.gz"
    sitk.WriteImage(nifti, str(path), useCompression=True)
    vol = read_volume(path)
    return LoadedImage(
        vol.array,
        spacing_zyx(vol.image),
        "nifti",
        "",
        "MR",
        vol.image,
        folder=folder,
        ground_truth=np.ascontiguousarray(label.transpose(2, 1, 0)),
        ground_truth_names=tuple(LA_CLASSES),
    )


#: bundled synthetic examples: display name -> builder writing into a fresh folder
EXAMPLES: dict[str, Callable[[Path], LoadedImage]] = {
    "Synthetic cine MR (cardiac, ACDC-like)": _cardiac_example,
    "Synthetic CT phantom (DICOM)": _ct_example,
    "Synthetic atrium MR (3D, LA-like)": _atrium_example,
}


def example_names() -> list[str]:
    """Names of the bundled synthetic examples, for a select box.

    Example:
        >>> example_names()[0]
        'Synthetic cine MR (cardiac, ACDC-like)'
    """
    return list(EXAMPLES)


def load_example(name: str, workdir: str | Path) -> LoadedImage:
    """Build a synthetic example (deterministic, well under a second) in a fresh subfolder of ``workdir``.

    The DICOM examples are written as a series and read back through the DICOM path, so DICOM SEG export works
    for them as for uploads; ``ground_truth`` holds their true labels.

    Args:
        name: one of :func:`example_names`.
        workdir: the session's temporary folder.

    Returns:
        The :class:`LoadedImage` with ``ground_truth`` and ``ground_truth_names``.

    Raises:
        KeyError: for an unknown name, with close matches.
    """
    if name not in EXAMPLES:
        close = difflib.get_close_matches(name, list(EXAMPLES), n=3, cutoff=0.3)
        raise KeyError(f"unknown example {name!r}; did you mean {close or list(EXAMPLES)}?")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="example-", dir=workdir))
    loaded = EXAMPLES[name](folder)
    loaded.name = name
    return loaded
