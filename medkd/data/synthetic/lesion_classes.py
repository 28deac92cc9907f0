# SPDX-License-Identifier: Apache-2.0
"""SynthLesion-2D: a synthetic 2-D lesion classification task on which a teacher's soft labels help a small student.

Spec ``distillation_plugins.md`` §5. Each 64x64 one-channel image shows one lesion inside a textured organ. The five
classes are margin/shape/texture variants of a blob, BI-RADS-like:

========== ====================================================================================
class      appearance (the class prototype; each case draws its parameters around it)
========== ====================================================================================
round      round, smooth, sharp margin, homogeneous
oval       elongated, smooth, sharp margin
lobulated  a few large lobes (2nd/3rd boundary harmonics), slightly heterogeneous
irregular  lobes and short spikes, ill-defined (blurred) margin, heterogeneous with a dark core
spiculated thin radial spicules, sharp margin, moderately heterogeneous
========== ====================================================================================

The shape parameters of a case (lobulation, spiculation, aspect ratio, heterogeneity, margin blur) are drawn
around its class prototype with a spread (``overlap``) wide enough that neighbouring classes overlap: even the
generating parameters do not determine the class for every case, so the Bayes-optimal posteriors are soft and
carry the class-similarity structure (round~oval~lobulated~irregular~spiculated) that distillation transfers.
Nuisance factors are recorded per case: ``modality`` A (hyperintense lesion on a dark organ, fine texture) or B
(hypointense lesion on a bright organ, coarser texture, more noise, another gamma); ``anatomy`` 0-2 (the organ
region the lesion sits in); ``severity`` in [0, 1] (lesion radius 0.09-0.2 of the side and contrast grow with it,
so low-severity lesions are small, faint and ambiguous). Small round distractor blobs, blur and noise complete the
image.

:func:`write_synth_lesion_2d` writes the splits as class folders (``<root>/<split>/<class>/<case>.png``, read by
:func:`medkd.data.classification.read_classification_split`): ``teacher_train`` (clean, large), ``train`` (the
student's small split, a ``label_noise`` fraction of labels flipped to another class; the file sits in the folder of
its noisy label), ``val`` and ``test`` (clean); unlabelled images in ``<root>/unlabelled/`` and every case in
``<root>/metadata.csv`` (``case,split,image,label,true_label,modality,anatomy,severity,paired``).
:func:`write_classification_datalist` turns that into ``<root>/datalist.csv`` for the CSV layout. Everything is a
pure function of the seed; 2,000 images are made and written in about three seconds on one core.

With ``paired=True`` every case also gets its **paired second modality** (spec §5): the same lesion, organ and
texture rendered in the other ``modality`` (A <-> B: the other intensities, texture scale and gamma) with its own
acquisition noise, as a second scan of the same patient would be; it is written to a sibling tree
``<root>/paired/<split>/<class>/<case>.png`` (``paired/unlabelled/<case>.png``) that the class-folder reader never
reads as a split of its own, and named in the ``paired`` column (empty when not written). Multi-modal teacher ->
single-modality student methods (MST-Distill) read it through ``data.paired_column: paired`` (CSV layout).

Example:
    >>> import tempfile
    >>> from medkd.data.classification import read_classification_split
    >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=10, n_train=10, n_val=5, n_test=5,
    ...                              n_unlabelled=2, size=32)
    >>> split = read_classification_split(root, "train")
    >>> len(split.items), split.class_names
    (10, ('irregular', 'lobulated', 'oval', 'round', 'spiculated'))
"""

from __future__ import annotations

import copy
import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.special import expit

__all__ = [
    "LESION_CLASS_NAMES",
    "METADATA_COLUMNS",
    "SYNTH_SPLITS",
    "LesionClassConfig",
    "make_lesion_class_images",
    "write_classification_datalist",
    "write_synth_lesion_2d",
]

logger = logging.getLogger(__name__)

#: the classes in prototype order (neighbours in this order look alike); folders and class indices are sorted names
LESION_CLASS_NAMES: tuple[str, ...] = ("round", "oval", "lobulated", "irregular", "spiculated")
METADATA_COLUMNS: tuple[str, ...] = (
    "case", "split", "image", "label", "true_label", "modality", "anatomy", "severity", "paired",
)
#: labelled splits in writing order (their seeds are ``[seed, index]``, unlabelled images use index 4)
SYNTH_SPLITS: tuple[str, ...] = ("teacher_train", "train", "val", "test")
_UNLABELLED = "unlabelled"
_PAIRED = "paired"  # the sibling tree of the paired second modality
_CHUNK = 256
_Range = tuple[float, float]

# prototypes: lobulation, spiculation (amplitudes relative to the radius), aspect ratio (minor/major),
# heterogeneity (0-1), margin blur (relative to the radius); one row per class in LESION_CLASS_NAMES order
_PROTOTYPES = np.array(
    [
        [0.03, 0.00, 0.92, 0.12, 0.07],  # round
        [0.05, 0.01, 0.66, 0.18, 0.09],  # oval
        [0.18, 0.05, 0.80, 0.30, 0.11],  # lobulated
        [0.13, 0.13, 0.76, 0.58, 0.22],  # irregular
        [0.07, 0.32, 0.84, 0.45, 0.09],  # spiculated
    ]
)
_SPREAD = np.array([0.055, 0.075, 0.11, 0.16, 0.055])  # per-case standard deviation of each parameter (overlap = 1)
_LOW = np.array([0.0, 0.0, 0.4, 0.0, 0.03])
_HIGH = np.array([0.4, 0.7, 1.0, 1.0, 0.45])
# lesion anchors per anatomy (row, col as fractions of the side), inside the organ ellipse
_ANCHORS = np.array([[0.34, 0.36], [0.62, 0.30], [0.52, 0.66]])
# modality A / B: organ level, outside level, lesion sign, texture amplitude, texture scale (px), noise, gamma
_MODALITY = {
    "A": dict(organ=0.30, outside=0.06, sign=1.0, texture=0.035, scale=1.2, noise=0.03, gamma=1.0),
    "B": dict(organ=0.62, outside=0.18, sign=-1.0, texture=0.04, scale=1.8, noise=0.04, gamma=1.3),
}


@dataclass(frozen=True, kw_only=True)
class LesionClassConfig:
    """Appearance of SynthLesion-2D. Sizes are fractions of the image side; ``(lo, hi)`` ranges are mapped
    linearly from severity 0 to severity 1 (radius, contrast) or drawn uniformly (the others).

    Attributes:
        overlap: multiplies the per-case spread of the shape parameters around the class prototypes; 0 gives
            (nearly) separable classes, larger values more confusion between neighbouring classes.
        radius: lesion radius at severity 0 and 1.
        contrast: lesion contrast at severity 0 and 1 (in units of the [0, 1] intensity range).
        severity_beta: Beta(a, b) of the severity; the class shifts ``a`` by ``0.5 * (k - 2)`` (k the prototype
            index), so spiculated lesions tend to be more severe than round ones.
        distractors: mean number (Poisson) of small round distractor blobs per image.
        blur: acquisition blur, pixels at 64².
        noise_scale: multiplies both modalities' noise level.
    """

    overlap: float = 1.0
    radius: _Range = (0.09, 0.2)
    contrast: _Range = (0.25, 0.6)
    severity_beta: _Range = (2.0, 2.0)
    distractors: float = 0.6
    blur: _Range = (0.4, 0.9)
    noise_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.overlap < 0 or self.distractors < 0 or self.noise_scale < 0:
            raise ValueError(
                f"overlap, distractors and noise_scale must be >= 0, got {self.overlap}, {self.distractors}, "
                f"{self.noise_scale}"
            )
        if not 0 < self.radius[0] <= self.radius[1] < 0.3:
            raise ValueError(f"radius must be a range in (0, 0.3), got {self.radius}")
        if min(self.severity_beta) <= 1.0:
            raise ValueError(f"severity_beta parameters must exceed 1, got {self.severity_beta}")


def _blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-image Gaussian blur of ``(n, s, s)`` with ``sigma`` ``(n,)`` pixels (FFT, wrap-around edges)."""
    size = images.shape[-1]
    f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    transfer = np.exp(-2.0 * np.pi**2 * sigma[:, None, None] ** 2 * f2[None])
    return np.fft.irfft2(np.fft.rfft2(images) * transfer, s=images.shape[-2:])


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: np.ndarray) -> np.ndarray:
    field = _blur(rng.standard_normal((n, size, size)), sigma)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-8)


def _render_chunk(rng: np.random.Generator, labels: np.ndarray, modality: np.ndarray, anatomy: np.ndarray,
                  severity: np.ndarray, size: int, cfg: LesionClassConfig,
                  acquisition_rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    n, s = len(labels), float(size)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    yy, xx = yy[None], xx[None]
    is_b = modality == "B"
    mod = {k: np.where(is_b, _MODALITY["B"][k], _MODALITY["A"][k]) for k in _MODALITY["A"]}

    # --- organ and parenchyma ----------------------------------------------------------------------------------
    organ_c = s * (0.5 + rng.normal(0, 0.02, (n, 2)))
    organ_r = s * rng.uniform(0.36, 0.44, (n, 2))
    ell = ((yy - organ_c[:, 0, None, None]) / organ_r[:, 0, None, None]) ** 2 + (
        (xx - organ_c[:, 1, None, None]) / organ_r[:, 1, None, None]
    ) ** 2
    organ = expit((1.0 - np.sqrt(ell)) / 0.04)
    texture = _smooth_noise(rng, n, size, mod["scale"] * s / 64.0) * mod["texture"][:, None, None]
    shading = 1.0 + 0.08 * _smooth_noise(rng, n, size, np.full(n, 0.25 * s))
    background = (mod["outside"][:, None, None] + (mod["organ"] - mod["outside"])[:, None, None] * organ * shading
                  + texture * organ)

    # --- lesion shape parameters around the class prototypes ---------------------------------------------------------
    params = _PROTOTYPES[labels] + rng.standard_normal((n, 5)) * _SPREAD * cfg.overlap
    lobe, spike, aspect, hetero, margin = np.clip(params, _LOW, _HIGH).T
    radius = s * (cfg.radius[0] + (cfg.radius[1] - cfg.radius[0]) * severity) * rng.uniform(0.9, 1.1, n)
    contrast = (cfg.contrast[0] + (cfg.contrast[1] - cfg.contrast[0]) * severity) * rng.uniform(0.85, 1.15, n)
    centre = s * (_ANCHORS[anatomy] + rng.normal(0, 0.04, (n, 2)))
    theta = rng.uniform(0, np.pi, n)
    phases = rng.uniform(0, 2 * np.pi, (n, 3))
    harmonics = rng.dirichlet((2.0, 2.0), n)  # weights of the 2nd and 3rd boundary harmonics
    n_spikes = rng.integers(7, 13, n)

    def per(x: np.ndarray) -> np.ndarray:
        return x[:, None, None]

    dy, dx = yy - per(centre[:, 0]), xx - per(centre[:, 1])
    u = np.cos(per(theta)) * dx + np.sin(per(theta)) * dy
    v = (-np.sin(per(theta)) * dx + np.cos(per(theta)) * dy) / per(aspect)
    rho, phi = np.hypot(u, v), np.arctan2(v, u)
    lobes = per(harmonics[:, 0]) * np.cos(2 * phi + per(phases[:, 0])) + per(harmonics[:, 1]) * np.cos(
        3 * phi + per(phases[:, 1])
    )
    spikes = np.maximum(np.cos(per(n_spikes) * phi + per(phases[:, 2])), 0.0) ** 6
    boundary = per(radius) * (1.0 + per(lobe) * lobes + per(spike) * spikes)
    footprint = expit((boundary - rho) / (per(margin * radius) + 0.35))
    core = expit((0.5 * boundary - rho) / (0.12 * per(radius) + 0.3))
    fine = _smooth_noise(rng, n, size, np.full(n, 0.8 * s / 64.0))
    interior = 1.0 - 0.55 * per(hetero) * core + 0.35 * per(hetero) * fine
    lesion = footprint * interior * per(contrast)

    # --- distractors: small smooth round blobs of either sign ---------------------------------------------------------
    n_distract = rng.poisson(cfg.distractors, n)
    for k in range(int(n_distract.max(initial=0))):
        c = s * rng.uniform(0.2, 0.8, (n, 2))
        r = s * rng.uniform(0.02, 0.045, n)
        amp = rng.uniform(0.05, 0.2, n) * np.where(rng.random(n) < 0.7, 1.0, -1.0) * (k < n_distract)
        blob = np.exp(-((yy - per(c[:, 0])) ** 2 + (xx - per(c[:, 1])) ** 2) / (2 * per(r) ** 2))
        background = background + per(amp) * blob * organ

    # --- acquisition ------------------------------------------------------------------------------------------------
    image = background + per(mod["sign"]) * lesion
    image = _blur(image, rng.uniform(*cfg.blur, n) * s / 64.0)
    image = np.clip(image, 0.0, 1.0) ** per(mod["gamma"] * rng.uniform(0.9, 1.1, n))
    noise = per(mod["noise"] * cfg.noise_scale * rng.uniform(0.8, 1.2, n))
    white = rng.standard_normal(image.shape)  # drawn either way, so ``rng`` advances alike with a second acquisition
    if acquisition_rng is not None:
        white = acquisition_rng.standard_normal(image.shape)
    image = image + white * noise
    mask = (footprint > 0.5).astype(np.uint8)
    return np.clip(image, 0.0, 1.0).astype(np.float32), mask


def make_lesion_class_images(
    rng: np.random.Generator,
    labels: Sequence[int] | np.ndarray,
    *,
    modality: Sequence[str] | np.ndarray,
    anatomy: Sequence[int] | np.ndarray,
    severity: Sequence[float] | np.ndarray,
    size: int = 64,
    config: LesionClassConfig | None = None,
    acquisition_rng: np.random.Generator | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render SynthLesion-2D images, one lesion each, in vectorised chunks.

    Args:
        rng: the random generator; the images are a pure function of its state and the arguments.
        labels: ``(n,)`` prototype indices into :data:`LESION_CLASS_NAMES` (0 round ... 4 spiculated).
        modality: ``(n,)`` ``"A"`` or ``"B"``.
        anatomy: ``(n,)`` lesion region 0, 1 or 2.
        severity: ``(n,)`` values in [0, 1].
        size: image side in pixels (>= 16).
        config: appearance (default :class:`LesionClassConfig`).
        acquisition_rng: when given, the acquisition noise is drawn from it instead of ``rng`` (everything else
            still from ``rng``, which advances exactly as without it): rendering again from a copy of ``rng``'s
            state with the other ``modality`` gives a second, independently noisy scan of the same cases.

    Returns:
        ``(images, masks)``: float32 ``(n, size, size)`` in [0, 1] and the lesion masks uint8 ``(n, size, size)``.

    Raises:
        ValueError: mismatched lengths or values out of range.

    Example:
        >>> imgs, masks = make_lesion_class_images(np.random.default_rng(0), [0, 4], modality=["A", "B"],
        ...                                        anatomy=[0, 2], severity=[0.2, 0.9], size=32)
        >>> imgs.shape, imgs.dtype.name, bool(masks[1].sum() > masks[0].sum())
        ((2, 32, 32), 'float32', True)
    """
    cfg = config or LesionClassConfig()
    labels = np.asarray(labels, dtype=np.int64)
    modality, anatomy = np.array(list(modality), dtype=str), np.asarray(anatomy, dtype=np.int64)
    severity = np.asarray(severity, dtype=np.float64)
    n = len(labels)
    if not (len(modality) == len(anatomy) == len(severity) == n):
        raise ValueError(f"labels, modality, anatomy and severity differ in length: {n}, {len(modality)}, "
                         f"{len(anatomy)}, {len(severity)}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    if n and (labels.min() < 0 or labels.max() >= len(LESION_CLASS_NAMES)):
        raise ValueError(f"labels must lie in [0, {len(LESION_CLASS_NAMES)}), got [{labels.min()}, {labels.max()}]")
    if n and (not np.isin(modality, ("A", "B")).all() or anatomy.min() < 0 or anatomy.max() > 2
              or severity.min() < 0 or severity.max() > 1):
        raise ValueError("modality must be 'A'/'B', anatomy 0-2 and severity in [0, 1]")
    images, masks = np.zeros((n, size, size), np.float32), np.zeros((n, size, size), np.uint8)
    for start in range(0, n, _CHUNK):
        part = slice(start, start + _CHUNK)
        images[part], masks[part] = _render_chunk(
            rng, labels[part], modality[part], anatomy[part], severity[part], size, cfg, acquisition_rng
        )
    return images, masks


@dataclass(frozen=True)
class _Cases:
    """Per-case draws of one split."""

    true: np.ndarray  # prototype index
    observed: np.ndarray  # after label noise
    modality: np.ndarray
    anatomy: np.ndarray
    severity: np.ndarray


def _draw_cases(rng: np.random.Generator, n: int, num_classes: int, noise: float, cfg: LesionClassConfig) -> _Cases:
    true = rng.permutation(np.arange(n) % num_classes)  # balanced classes
    observed = true.copy()
    flip = rng.choice(n, size=int(round(noise * n)), replace=False) if num_classes > 1 else np.zeros(0, np.int64)
    observed[flip] = (true[flip] + rng.integers(1, num_classes, len(flip))) % num_classes  # another class, uniform
    a, b = cfg.severity_beta
    severity = rng.beta(np.clip(a + 0.5 * (true - 2), 1.05, None), b)
    return _Cases(true, observed, np.where(rng.random(n) < 0.5, "A", "B"), rng.integers(0, 3, n), severity)


def _save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(np.round(image * 255.0).astype(np.uint8)).save(path, optimize=False, compress_level=1)


def write_synth_lesion_2d(
    root: str | Path,
    *,
    n_teacher_train: int = 8000,
    n_train: int = 1000,
    n_val: int = 1000,
    n_test: int = 2000,
    n_unlabelled: int = 4000,
    size: int = 64,
    num_classes: int = 5,
    label_noise: float = 0.2,
    seed: int = 0,
    config: LesionClassConfig | None = None,
    paired: bool = False,
) -> Path:
    """Write SynthLesion-2D (spec ``distillation_plugins.md`` §5) in the class-folder layout plus its metadata.

    Layout under ``root``: ``<split>/<class>/<split>_NNNNN.png`` (8-bit grayscale) for the splits
    ``teacher_train``, ``train``, ``val`` and ``test`` (a ``train`` image lies in the folder of its **noisy**
    label); ``unlabelled/unlabelled_NNNNN.png``; ``metadata.csv`` with one row per image and the columns
    :data:`METADATA_COLUMNS` (``image`` relative to ``root``, ``label`` the observed class name, empty for
    unlabelled images, ``true_label`` the clean class, ``severity`` with four decimals). Every class folder of
    every split exists, even when it holds no image. Classes are balanced within a split; in ``train`` exactly
    ``round(label_noise * n_train)`` labels are replaced by a uniformly drawn other class.

    With ``paired``, every image also gets its paired second modality (module docstring):
    ``paired/<split>/<class>/<case>.png`` (``paired/unlabelled/<case>.png``), named in the ``paired`` column (empty
    otherwise). The main images are the same with or without it.

    Args:
        root: output folder (created if missing).
        n_teacher_train: clean images for the teacher (spec: 8k).
        n_train: the student's labelled images, with label noise (spec: 1k).
        n_val: clean validation images (spec: 1k).
        n_test: clean test images (spec: 2k).
        n_unlabelled: images without labels (spec: 4k).
        size: image side in pixels.
        num_classes: K in 2..5, the first K of :data:`LESION_CLASS_NAMES`.
        label_noise: fraction of ``train`` labels flipped, in [0, 1).
        seed: the dataset is a pure function of the arguments; each split has its own stream, so changing one
            split's size leaves the others unchanged.
        config: appearance (default :class:`LesionClassConfig`).
        paired: also write each case in the other modality (same lesion, own acquisition noise).

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ValueError: ``num_classes`` outside 2..5, ``label_noise`` outside [0, 1), a negative count, or no
            ``train`` image.

    Example:
        >>> import csv, tempfile
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=4, n_train=5, n_val=2, n_test=2,
        ...                              n_unlabelled=1, size=32, num_classes=3)
        >>> rows = list(csv.DictReader((root / "metadata.csv").open()))
        >>> len(rows), sorted(p.name for p in (root / "train").iterdir())
        (14, ['lobulated', 'oval', 'round'])
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=0, n_train=2, n_val=0, n_test=0,
        ...                              n_unlabelled=0, size=32, paired=True)
        >>> row = next(csv.DictReader((root / "metadata.csv").open()))
        >>> row["image"].replace(row["label"], "<class>"), row["paired"].replace(row["label"], "<class>")
        ('train/<class>/train_00000.png', 'paired/train/<class>/train_00000.png')
    """
    if not 2 <= num_classes <= len(LESION_CLASS_NAMES):
        raise ValueError(f"num_classes must be in 2..{len(LESION_CLASS_NAMES)}, got {num_classes}")
    if not 0.0 <= label_noise < 1.0:
        raise ValueError(f"label_noise must lie in [0, 1), got {label_noise}")
    counts = {"teacher_train": n_teacher_train, "train": n_train, "val": n_val, "test": n_test,
              _UNLABELLED: n_unlabelled}
    if min(counts.values()) < 0 or n_train < 1:
        raise ValueError(f"need n_train >= 1 and non-negative counts, got {counts}")
    cfg = config or LesionClassConfig()
    root = Path(root)
    names = LESION_CLASS_NAMES[:num_classes]
    rows: list[dict[str, str]] = []
    for index, (split, n) in enumerate(counts.items()):
        rng = np.random.default_rng([seed, index])
        cases = _draw_cases(rng, n, num_classes, label_noise if split == "train" else 0.0, cfg)
        twin = copy.deepcopy(rng) if paired else None  # draws the same cases again, for the paired modality
        images, _ = make_lesion_class_images(rng, cases.true, modality=cases.modality, anatomy=cases.anatomy,
                                             severity=cases.severity, size=size, config=cfg)
        second = None
        if twin is not None:
            other = np.where(cases.modality == "A", "B", "A")
            second, _ = make_lesion_class_images(twin, cases.true, modality=other, anatomy=cases.anatomy,
                                                 severity=cases.severity, size=size, config=cfg,
                                                 acquisition_rng=np.random.default_rng([seed, index, 1]))
        labelled = split != _UNLABELLED
        for tree in (Path(), Path(_PAIRED)) if paired else (Path(),):
            for name in names if labelled else ("",):
                (root / tree / split / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            case = f"{split}_{i:05d}"
            label = names[cases.observed[i]] if labelled else ""
            relative = Path(split, label, f"{case}.png") if labelled else Path(split, f"{case}.png")
            _save_png(root / relative, images[i])
            if second is not None:
                _save_png(root / _PAIRED / relative, second[i])
            rows.append({"case": case, "split": split, "image": relative.as_posix(), "label": label,
                         "true_label": names[cases.true[i]], "modality": str(cases.modality[i]),
                         "anatomy": str(cases.anatomy[i]), "severity": f"{cases.severity[i]:.4f}",
                         "paired": (Path(_PAIRED) / relative).as_posix() if second is not None else ""})
    with (root / "metadata.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=METADATA_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    logger.info("wrote SynthLesion-2D (K=%d, %d^2, label noise %.2f%s) to %s: %s", num_classes, size, label_noise,
                ", paired modality" if paired else "", root, counts)
    return root


def write_classification_datalist(root: str | Path) -> Path:
    """Write ``<root>/datalist.csv`` for the CSV layout from the ``metadata.csv`` of :func:`write_synth_lesion_2d`.

    Columns ``image,label,split,case,true_label,modality,anatomy,severity``, plus ``paired`` (the paired second
    modality, relative to ``root``) when the data were written with ``paired=True`` (the column is left out
    otherwise, so the items' metadata stay as they were); one row per labelled image (the unlabelled images have no
    label and are left out), ``image`` relative to ``root`` (the CSV's folder) and ``label`` the observed class
    name, so reading it gives the same items as the class folders.

    Args:
        root: a folder written by :func:`write_synth_lesion_2d`.

    Returns:
        The path of ``datalist.csv``.

    Raises:
        FileNotFoundError: ``root`` has no ``metadata.csv``.

    Example:
        >>> import tempfile
        >>> root = write_synth_lesion_2d(tempfile.mkdtemp(), n_teacher_train=2, n_train=2, n_val=1, n_test=1,
        ...                              n_unlabelled=1, size=32)
        >>> write_classification_datalist(root).read_text().splitlines()[0]
        'image,label,split,case,true_label,modality,anatomy,severity'
    """
    root = Path(root)
    with (root / "metadata.csv").open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if row["label"]]
    columns = ("image", "label", "split", "case", "true_label", "modality", "anatomy", "severity")
    if any(row.get("paired") for row in rows):
        columns += ("paired",)
    path = root / "datalist.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    logger.info("wrote %s (%d rows)", path, len(rows))
    return path
