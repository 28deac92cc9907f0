# SPDX-License-Identifier: Apache-2.0
"""Synthetic stand-ins for ACDC, LA and NIfTI data, written in the exact on-disk layouts of the real ones.

The generators make data that a segmentation network can learn but not solve from two labelled
patients: per-patient geometry, contrast and gamma vary, the myocardium is barely darker than the
surrounding tissue, a bright "aorta" distracts from the blood pools, and a bias field plus noise sit
on top. The writers emit the SSL4MIS ACDC layout, the UA-MT LA layout and an MSD-style NIfTI folder,
so tests and benchmarks exercise the real readers (spec ``bcp.md`` §3).

Example:
    >>> import numpy as np
    >>> image, label = make_cardiac_volume(np.random.default_rng(0), n_slices=4, size=32)
    >>> image.shape, image.dtype.name, label.dtype.name, int(label.max()) <= 3
    ((4, 32, 32), 'float32', 'uint8', True)
"""

from __future__ import annotations

import json
import logging
import string
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from scipy import ndimage

__all__ = [
    "make_cardiac_volume",
    "write_synthetic_acdc",
    "make_atrium_volume",
    "write_synthetic_la",
    "write_synthetic_nifti",
]

logger = logging.getLogger(__name__)

_LA_ID_ALPHABET = np.array(list(string.ascii_uppercase + string.digits))


def _smooth_noise(rng: np.random.Generator, shape: Sequence[int], sigma: Sequence[float]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to unit standard deviation."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    return ((x - lo) / (hi - lo + 1e-8)).astype(np.float32)


def make_cardiac_volume(
    rng: np.random.Generator, n_slices: int = 10, size: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic short-axis cine "patient": LV disk, myocardial ring, RV crescent.

    Geometry (centre, radii, RV angle and extent) and appearance (tissue, myocardium and blood
    intensities, gamma, bias field, noise level) are drawn per patient; radii shrink from base to apex
    and one or two apical slices may lack the RV, as in real stacks.

    Args:
        rng: the random generator; the volume is a pure function of its state.
        n_slices: number of short-axis slices S (>= 2).
        size: in-plane size H = W in pixels (>= 16).

    Returns:
        ``(image, label)``: image float32 (S, H, W) min-max normalised to [0, 1] over the volume;
        label uint8 (S, H, W) with 0 background, 1 RV, 2 myocardium, 3 LV.

    Raises:
        ValueError: if ``n_slices < 2`` or ``size < 16``.

    Example:
        >>> img, lab = make_cardiac_volume(np.random.default_rng(1), n_slices=3, size=32)
        >>> sorted(np.unique(lab).tolist())[:2]
        [0, 1]
    """
    if n_slices < 2 or size < 16:
        raise ValueError(f"need n_slices >= 2 and size >= 16, got {n_slices} and {size}")
    s, n = n_slices, float(size)
    z = np.linspace(0.0, 1.0, s)[:, None, None]  # 0 = base, 1 = apex
    yy, xx = np.meshgrid(np.arange(size, dtype=np.float64), np.arange(size, dtype=np.float64), indexing="ij")
    yy, xx = yy[None], xx[None]

    # --- geometry -------------------------------------------------------------------------------
    centre = n / 2 + rng.normal(0.0, 0.06 * n, 2)
    drift = rng.normal(0.0, 0.03 * n, 2)
    cy = centre[0] + drift[0] * (z - 0.5)
    cx = centre[1] + drift[1] * (z - 0.5)
    taper = 1.1 - rng.uniform(0.45, 0.6) * z ** rng.uniform(1.1, 1.6)
    taper = taper * (1.0 + rng.normal(0.0, 0.03, (s, 1, 1)))
    r_lv = rng.uniform(0.08, 0.13) * n * taper
    r_out = r_lv + rng.uniform(0.035, 0.055) * n * np.sqrt(taper)
    dist = np.hypot(yy - cy, xx - cx)

    phi = np.pi + rng.normal(0.0, 0.35)  # RV on the image's left, angle varying per patient
    rv_scale = taper**1.5
    rv_dist = r_out * rng.uniform(0.8, 1.1)
    ry = cy + rv_dist * np.sin(phi)
    rx = cx + rv_dist * np.cos(phi)
    a_rad = r_out * rng.uniform(0.7, 1.0) * rv_scale
    a_tan = r_out * rng.uniform(1.3, 1.8) * rv_scale
    du, dv = (yy - ry) * np.sin(phi) + (xx - rx) * np.cos(phi), -(yy - ry) * np.cos(phi) + (xx - rx) * np.sin(phi)
    in_rv_ellipse = (du / a_rad) ** 2 + (dv / a_tan) ** 2 <= 1.0
    n_missing = rng.choice([0, 1, 2], p=[0.3, 0.4, 0.3])
    rv_present = (np.arange(s) < s - n_missing)[:, None, None]
    gap = rng.uniform(0.5, 1.5)

    label = np.zeros((s, size, size), dtype=np.uint8)
    label[in_rv_ellipse & (dist >= r_out + gap) & rv_present] = 1
    label[(dist >= r_lv) & (dist < r_out)] = 2
    label[dist < r_lv] = 3

    # --- appearance -----------------------------------------------------------------------------
    tissue = rng.uniform(0.25, 0.45)
    myo = tissue + rng.uniform(-0.12, 0.03)
    blood_lv = rng.uniform(0.7, 1.0)
    blood_rv = blood_lv * rng.uniform(0.8, 1.0)
    body = ((yy - n / 2) / (0.47 * n)) ** 2 + ((xx - n / 2) / (0.5 * n)) ** 2 <= 1.0
    texture = _smooth_noise(rng, (s, size, size), (0.0, 2.5, 2.5))
    image = np.where(body, tissue + rng.uniform(0.04, 0.08) * texture, 0.03)
    # lungs: two dark lobes beside the heart; aorta: a bright disk that looks like a blood pool
    for side in (-1.0, 1.0):
        ly, lx = n / 2 + rng.normal(0, 0.05 * n), n / 2 + side * rng.uniform(0.27, 0.33) * n
        lung = ((yy - ly) / (rng.uniform(0.25, 0.33) * n)) ** 2 + ((xx - lx) / (rng.uniform(0.1, 0.14) * n)) ** 2
        image = np.where((lung <= 1.0) & (label == 0), rng.uniform(0.05, 0.15), image)
    ang = rng.uniform(-0.6, 0.6)
    ao_y = cy + (r_out.max() + rng.uniform(0.08, 0.14) * n) * np.cos(ang)
    ao_x = cx + (r_out.max() + rng.uniform(0.08, 0.14) * n) * np.sin(ang)
    aorta = np.hypot(yy - ao_y, xx - ao_x) < rng.uniform(0.04, 0.06) * n
    image = np.where(aorta & (label == 0), blood_lv * rng.uniform(0.85, 1.05), image)
    image = np.where(label == 1, blood_rv, image)
    image = np.where(label == 2, myo + 0.03 * texture, image)
    image = np.where(label == 3, blood_lv, image)
    # papillary muscles: dark specks inside the LV cavity that belong to the LV label
    specks = (dist < r_lv * 0.8) & (_smooth_noise(rng, (s, size, size), (0.0, 1.0, 1.0)) > 1.6)
    image = np.where(specks, myo, image)

    image = ndimage.gaussian_filter(image, sigma=(0.0, 0.7, 0.7))  # partial-volume blur
    grad = rng.uniform(-0.35, 0.35, 2)
    bias = 1.0 + grad[0] * (yy - n / 2) / n + grad[1] * (xx - n / 2) / n
    bias = bias + 0.15 * _smooth_noise(rng, (1, size, size), (0.0, 0.25 * n, 0.25 * n))
    image = np.clip(image * bias, 0.0, None) ** rng.uniform(0.7, 1.4)
    image = image + rng.normal(0.0, rng.uniform(0.04, 0.1), image.shape)
    return _minmax(image), label


def _write_h5(path: Path, image: np.ndarray, label: np.ndarray) -> None:
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)


def _write_list(path: Path, names: Sequence[str]) -> None:
    path.write_text("".join(f"{name}\n" for name in names))


def write_synthetic_acdc(
    root: str | Path,
    *,
    n_train: int = 40,
    n_val: int = 6,
    n_test: int = 10,
    n_slices: int = 10,
    size: int = 64,
    seed: int = 0,
) -> Path:
    """Write a synthetic ACDC dataset in the SSL4MIS layout (spec ``bcp.md`` §3).

    Layout under ``root``: ``data/slices/patientXXX_frame01_slice_<k>.h5`` (``image`` float32 (H, W),
    ``label`` uint8 (H, W)) for every slice of every patient; ``data/patientXXX_frame01.h5`` (``image``,
    ``label`` shaped (S, H, W)) for every patient; list files ``train_slices.list`` (training slices,
    grouped by patient, patients and each patient's slices shuffled, as in the real list), ``train.list``,
    ``val.list``, ``test.list`` and ``all_slices.list``, names without ``.h5``. Patient numbers 1..N are
    assigned to splits at random.

    Args:
        root: output folder (created if missing).
        n_train: training patients.
        n_val: validation patients.
        n_test: test patients.
        n_slices: slices per patient.
        size: in-plane size in pixels.
        seed: seed of the generator; the dataset is a pure function of the arguments.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``n_train < 1`` or the total exceeds 999 patients.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_acdc(tempfile.mkdtemp(), n_train=2, n_val=1, n_test=1, n_slices=3, size=32)
        >>> len((root / "train_slices.list").read_text().split())
        6
    """
    total = n_train + n_val + n_test
    if n_train < 1 or min(n_val, n_test) < 0 or total > 999:
        raise ValueError(
            f"need n_train >= 1, n_val, n_test >= 0 and at most 999 patients; got {n_train}/{n_val}/{n_test}"
        )
    root = Path(root)
    slices_dir = root / "data" / "slices"
    slices_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    numbers = rng.permutation(np.arange(1, total + 1))
    splits = {
        "train": sorted(numbers[:n_train].tolist()),
        "val": sorted(numbers[n_train : n_train + n_val].tolist()),
        "test": sorted(numbers[n_train + n_val :].tolist()),
    }
    slice_names: dict[int, list[str]] = {}
    for number in sorted(numbers.tolist()):
        volume = f"patient{number:03d}_frame01"
        image, label = make_cardiac_volume(np.random.default_rng([seed, number]), n_slices=n_slices, size=size)
        _write_h5(root / "data" / f"{volume}.h5", image, label)
        slice_names[number] = [f"{volume}_slice_{k}" for k in range(n_slices)]
        for k, name in enumerate(slice_names[number]):
            _write_h5(slices_dir / f"{name}.h5", image[k], label[k])
    train_order = rng.permutation(np.asarray(splits["train"])).tolist()
    # like the real list: patients in shuffled order, each patient's slices consecutive but shuffled
    train_slices = [name for p in train_order for name in rng.permutation(slice_names[p]).tolist()]
    _write_list(root / "train_slices.list", train_slices)
    for split, members in splits.items():
        _write_list(root / f"{split}.list", [f"patient{p:03d}_frame01" for p in members])
    _write_list(root / "all_slices.list", [name for p in sorted(slice_names) for name in slice_names[p]])
    logger.info("wrote synthetic ACDC (%d/%d/%d patients, %d slices of %d^2) to %s", n_train, n_val, n_test,
                n_slices, size, root)
    return root


def make_atrium_volume(
    rng: np.random.Generator, shape: Sequence[int] = (48, 48, 32)
) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic "left atrium" MRI: a smoothed ellipsoid plus a bump (appendage), in noisy tissue.

    Args:
        rng: the random generator.
        shape: volume shape (W, H, D), each >= 4.

    Returns:
        ``(image, label)``: image float32 (W, H, D), z-scored (mean 0, std 1); label uint8 (W, H, D) in {0, 1}.

    Raises:
        ValueError: if ``shape`` is not 3D or an axis is smaller than 4.

    Example:
        >>> img, lab = make_atrium_volume(np.random.default_rng(0), shape=(16, 16, 12))
        >>> img.shape, lab.dtype.name, abs(float(img.mean())) < 1e-3
        ((16, 16, 12), 'uint8', True)
    """
    shape = tuple(int(v) for v in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3D with every axis >= 4, got {shape}")
    dims = np.asarray(shape, dtype=np.float64)
    grid = np.stack(np.meshgrid(*[np.arange(v, dtype=np.float64) for v in shape], indexing="ij"))
    centre = dims / 2 + rng.normal(0.0, 0.05, 3) * dims
    radii = dims * rng.uniform(0.18, 0.28, 3)
    rot, _ = np.linalg.qr(np.eye(3) + rng.normal(0.0, 0.25, (3, 3)))  # a mild random rotation
    local = np.einsum("ij,j...->i...", rot, grid - centre[:, None, None, None])
    field = np.sum((local / radii[:, None, None, None]) ** 2, axis=0)
    direction = rng.normal(0.0, 1.0, 3)
    direction /= np.linalg.norm(direction)
    bump_centre = centre + direction * radii.mean() * rng.uniform(0.8, 1.0)
    bump_radius = radii.mean() * rng.uniform(0.35, 0.5)
    bump = np.sum((grid - bump_centre[:, None, None, None]) ** 2, axis=0) / bump_radius**2
    inside = ((field <= 1.0) | (bump <= 1.0)).astype(np.float64)
    label = (ndimage.gaussian_filter(inside, sigma=1.5) > 0.5).astype(np.uint8)

    tissue = _smooth_noise(rng, shape, (3.0, 3.0, 2.0))
    image = 0.3 + 0.1 * tissue + label * rng.uniform(0.35, 0.6)
    image = ndimage.gaussian_filter(image, sigma=0.8)
    bias = 1.0 + 0.2 * _smooth_noise(rng, shape, tuple(0.3 * dims))
    image = image * bias + rng.normal(0.0, rng.uniform(0.06, 0.12), shape)
    image = (image - image.mean()) / (image.std() + 1e-8)
    return image.astype(np.float32), label


def _la_ids(rng: np.random.Generator, count: int) -> list[str]:
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < count:
        for row in rng.choice(_LA_ID_ALPHABET, size=(count, 20)):
            code = "".join(row.tolist())
            if code not in seen and len(ids) < count:
                seen.add(code)
                ids.append(code)
    return ids


def write_synthetic_la(
    root: str | Path,
    *,
    n_train: int = 40,
    n_test: int = 10,
    shape: Sequence[int] = (48, 48, 32),
    seed: int = 0,
) -> Path:
    """Write a synthetic LA dataset in the UA-MT layout (spec ``bcp.md`` §3).

    Layout under ``root``: ``2018LA_Seg_Training Set/<ID>/mri_norm2.h5`` with ``image`` float32 (W, H, D)
    and ``label`` uint8 {0, 1}, ``<ID>`` a 20-character uppercase alphanumeric code; ``train.list`` and
    ``test.list`` with one ID per line.

    Args:
        root: output folder (created if missing).
        n_train: cases in ``train.list``.
        n_test: cases in ``test.list``.
        shape: volume shape (W, H, D).
        seed: generator seed.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``n_train < 1`` or ``n_test < 0``.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_la(tempfile.mkdtemp(), n_train=2, n_test=1, shape=(16, 16, 12))
        >>> len((root / "train.list").read_text().split())
        2
    """
    if n_train < 1 or n_test < 0:
        raise ValueError(f"need n_train >= 1 and n_test >= 0, got {n_train} and {n_test}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    ids = _la_ids(rng, n_train + n_test)
    for i, case_id in enumerate(ids):
        image, label = make_atrium_volume(np.random.default_rng([seed, i]), shape)
        case_dir = root / "2018LA_Seg_Training Set" / case_id
        case_dir.mkdir(parents=True, exist_ok=True)
        _write_h5(case_dir / "mri_norm2.h5", image, label)
    _write_list(root / "train.list", ids[:n_train])
    _write_list(root / "test.list", ids[n_train:])
    logger.info("wrote synthetic LA (%d train, %d test, shape %s) to %s", n_train, n_test, tuple(shape), root)
    return root


def write_synthetic_nifti(
    root: str | Path,
    *,
    n: int = 4,
    shape: Sequence[int] = (32, 48, 48),
    seed: int = 0,
    msd: bool = True,
) -> Path:
    """Write NIfTI image/label pairs with a non-identity geometry, MSD style.

    ``imagesTr/case_XXX.nii.gz`` (float32) and ``labelsTr/case_XXX.nii.gz`` (uint8, same file name), with
    spacing (0.8, 0.7, 2.5) mm (x, y, z), a non-zero origin and a flipped x direction. With ``msd=True``
    also ``imagesTs/`` (one unlabelled case) and a ``dataset.json`` listing ``training`` entries
    (``image``/``label`` relative to the json) and ``test`` entries as plain strings.

    Args:
        root: output folder (created if missing).
        n: labelled cases.
        shape: array shape (z, y, x), the order of ``SimpleITK.GetArrayFromImage``.
        seed: generator seed.
        msd: also write ``imagesTs/`` and ``dataset.json``.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: if ``n < 1``.

    Example:
        >>> import tempfile
        >>> root = write_synthetic_nifti(tempfile.mkdtemp(), n=1, shape=(8, 16, 16))
        >>> sorted(p.name for p in root.iterdir())
        ['dataset.json', 'imagesTr', 'imagesTs', 'labelsTr']
    """
    import SimpleITK as sitk

    if n < 1:
        raise ValueError(f"need n >= 1, got {n}")
    root = Path(root)
    for sub in ("imagesTr", "labelsTr") + (("imagesTs",) if msd else ()):
        (root / sub).mkdir(parents=True, exist_ok=True)

    def write(array: np.ndarray, path: Path) -> None:
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((0.8, 0.7, 2.5))
        img.SetOrigin((12.5, -30.0, 7.25))
        img.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        sitk.WriteImage(img, str(path), useCompression=True)

    n_test = 1 if msd else 0
    training = []
    for i in range(n + n_test):
        zyx = tuple(int(v) for v in shape)
        image, label = make_atrium_volume(np.random.default_rng([seed, i]), zyx[::-1])
        image, label = image.transpose(2, 1, 0).copy(), label.transpose(2, 1, 0).copy()  # (x,y,z) -> (z,y,x)
        name = f"case_{i:03d}.nii.gz"
        if i < n:
            write(image, root / "imagesTr" / name)
            write(label, root / "labelsTr" / name)
            training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
        else:
            write(image, root / "imagesTs" / name)
    if msd:
        meta = {
            "name": "SyntheticAtrium",
            "tensorImageSize": "3D",
            "modality": {"0": "MRI"},
            "labels": {"0": "background", "1": "left_atrium"},
            "numTraining": n,
            "numTest": n_test,
            "training": training,
            "test": [f"./imagesTs/case_{i:03d}.nii.gz" for i in range(n, n + n_test)],
        }
        (root / "dataset.json").write_text(json.dumps(meta, indent=2))
    return root
