# SPDX-License-Identifier: Apache-2.0
"""Synthetic mammography-like lesion detection in two domains, in the COCO layout, plus a simulated expert.

Spec ``grounded_teacher.md`` §3 ("Synthetic generator"): 1-channel images (default 128²) of noise parenchyma inside
a breast mask (half ellipse on the chest-wall side), 30% normals, 1-3 lesions otherwise, classes

* ``mass``: a bright, smooth-edged ellipse;
* ``spiculated``: a smaller bright core with radial spicules (a star);
* ``calcification_cluster`` (K = 3): a cluster of tiny very bright dots;

drawn with the imbalance 80/20 (K = 2) or 80/15/5 (K = 3) per lesion. The **source** domain has smooth, low-noise
parenchyma; the **target** domain is shifted per image (gamma, contrast compression, blur, noise, a denser and
finer texture and a brighter background), all strengths being :class:`SyntheticLesionConfig` fields, so a detector
trained on the source loses accuracy on the target while the lesions stay visible in both.

:func:`write_lesion_domains` writes ``root/source`` and ``root/target`` (each ``annotations/instances_{train,val}
.json`` + ``images/{train,val}/*.png``, read by :func:`medkd.data.coco.read_coco_split`) and
``root/target/expert_boxes.csv`` from :class:`SyntheticExpert` on the target **train** images. Everything is a pure
function of the seed; images are made in vectorised chunks (700 images of 128² in about a second).

Example:
    >>> import tempfile
    >>> from medkd.data.coco import read_coco_split
    >>> out = write_lesion_domains(tempfile.mkdtemp(), n_source_train=4, n_source_val=2, n_target_train=4,
    ...                            n_target_val=2, size=64)
    >>> ds = read_coco_split(out["target"], "train")
    >>> len(ds), ds.class_names
    (4, ('mass', 'spiculated'))
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy.special import expit

from medkd.data.coco import DetectionRecord, write_coco_split

__all__ = [
    "LESION_CLASSES",
    "CLASS_WEIGHTS",
    "EXPERT_CSV_COLUMNS",
    "SyntheticLesionConfig",
    "SyntheticExpertConfig",
    "SyntheticExpert",
    "make_lesion_images",
    "write_lesion_domains",
]

logger = logging.getLogger(__name__)

LESION_CLASSES = ("mass", "spiculated", "calcification_cluster")
#: per-lesion class probabilities by K
CLASS_WEIGHTS = {1: (1.0,), 2: (0.8, 0.2), 3: (0.80, 0.15, 0.05)}
EXPERT_CSV_COLUMNS = ("ImageName", "Prompt", "MeanConfidence", "MaxConfidence", "X", "Y", "W", "H")
_MAX_SLOTS = 3
_CHUNK = 32
_Range = tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class SyntheticLesionConfig:
    """Appearance of the synthetic images. Sizes are fractions of the image side; ``(lo, hi)`` are uniform ranges.

    The ``source_*`` and ``target_*`` fields set each domain's acquisition; the lead tunes the domain gap with them
    (e.g. ``replace(cfg, target_gamma=(0.5, 2.0))``).
    """

    num_classes: int = 2
    normal_fraction: float = 0.3
    lesion_count_probs: tuple[float, ...] = (0.6, 0.3, 0.1)  # 1, 2, 3 lesions in an abnormal image
    class_weights: tuple[float, ...] | None = None  # None: CLASS_WEIGHTS[num_classes]
    # lesions (fractions of the side, intensity in units of the [0, 1] parenchyma)
    mass_radius: _Range = (0.035, 0.075)
    mass_elongation: _Range = (0.7, 1.0)
    spiculated_radius: _Range = (0.025, 0.045)
    spicule_length: _Range = (0.8, 1.4)  # spicule reach beyond the core, in core radii
    spicule_count: tuple[int, int] = (5, 9)
    cluster_radius: _Range = (0.035, 0.06)
    cluster_dots: tuple[int, int] = (5, 10)
    lesion_contrast: _Range = (0.3, 0.5)
    calcification_contrast: _Range = (0.6, 0.9)
    # parenchyma and acquisition, source domain
    source_texture: _Range = (0.06, 0.1)  # amplitude of the tissue texture
    source_texture_scale: _Range = (0.025, 0.035)  # correlation length (fraction of the side)
    source_gamma: _Range = (0.9, 1.1)
    source_contrast: _Range = (0.95, 1.05)
    source_blur: _Range = (0.0, 0.4)  # pixels, at 128²
    source_noise: _Range = (0.005, 0.02)
    source_background: _Range = (0.0, 0.03)
    # target domain
    target_texture: _Range = (0.08, 0.14)
    target_texture_scale: _Range = (0.008, 0.015)
    target_gamma: _Range = (0.6, 1.6)
    target_contrast: _Range = (0.6, 0.85)  # multiplies deviations from the tissue level (lesions included)
    target_blur: _Range = (0.8, 1.4)
    target_noise: _Range = (0.03, 0.06)
    target_background: _Range = (0.1, 0.25)

    def __post_init__(self) -> None:
        if self.num_classes not in CLASS_WEIGHTS:
            raise ValueError(f"num_classes must be 1, 2 or 3, got {self.num_classes}")
        if not 0.0 <= self.normal_fraction <= 1.0:
            raise ValueError(f"normal_fraction must lie in [0, 1], got {self.normal_fraction}")
        if len(self.lesion_count_probs) != _MAX_SLOTS or abs(sum(self.lesion_count_probs) - 1) > 1e-6:
            raise ValueError(f"lesion_count_probs must be 3 probabilities summing to 1, got {self.lesion_count_probs}")
        weights = self.weights
        if len(weights) != self.num_classes or abs(sum(weights) - 1) > 1e-6 or min(weights) < 0:
            raise ValueError(f"class_weights must be {self.num_classes} probabilities summing to 1, got {weights}")

    @property
    def weights(self) -> tuple[float, ...]:
        """Per-lesion class probabilities."""
        return self.class_weights if self.class_weights is not None else CLASS_WEIGHTS[self.num_classes]

    @property
    def class_names(self) -> tuple[str, ...]:
        """``mass``, ``spiculated`` (+ ``calcification_cluster``), the first K."""
        return LESION_CLASSES[: self.num_classes]


def _u(rng: np.random.Generator, bounds: Sequence[float], shape: Any) -> np.ndarray:
    return rng.uniform(bounds[0], bounds[1], shape)


def _smooth_noise(rng: np.random.Generator, n: int, size: int, sigma: np.ndarray) -> np.ndarray:
    """Unit-std Gaussian-filtered noise (n, size, size), one correlation length per image (FFT filtering)."""
    white = rng.standard_normal((n, size, size))
    field = _blur(white, sigma)
    return field / (field.std(axis=(1, 2), keepdims=True) + 1e-8)


def _blur(images: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """Per-image Gaussian blur (FFT, wrap-around edges are outside the breast anyway)."""
    size = images.shape[-1]
    f2 = np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None, :] ** 2
    transfer = np.exp(-2.0 * np.pi**2 * sigma[:, None, None] ** 2 * f2[None])
    return np.fft.irfft2(np.fft.rfft2(images) * transfer, s=images.shape[-2:])


def _place(rng: np.random.Generator, n: int, size: int, breast: dict[str, np.ndarray], radius: np.ndarray,
           present: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centres (n, slots, 2) as (row, col) inside the breast, non-overlapping; lesions that do not fit are dropped."""
    slots = radius.shape[1]
    centres = np.zeros((n, slots, 2))
    tries = 24
    for k in range(slots):
        cand = rng.uniform(0.0, size, (n, tries, 2))
        inside = (((cand[..., 1] - breast["wall"][:, None]) / breast["a"][:, None]) ** 2
                  + ((cand[..., 0] - breast["cy"][:, None]) / breast["b"][:, None]) ** 2) < 0.72**2
        margin = 2.5 * radius[:, k, None] + 2
        inside &= (cand > margin[..., None]).all(-1) & (cand < size - margin[..., None]).all(-1)
        for j in range(k):
            dist = np.hypot(*(cand - centres[:, j, None]).transpose(2, 0, 1))
            inside &= ~present[:, j, None] | (dist > 2.2 * (radius[:, k, None] + radius[:, j, None]) + 2)
        ok = inside.any(1)
        first = inside.argmax(1)
        centres[:, k] = cand[np.arange(n), first]
        present[:, k] &= ok
    return centres, present


def _render_chunk(rng: np.random.Generator, n: int, size: int, cfg: SyntheticLesionConfig,
                  domain: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    s = float(size)
    yy, xx = np.meshgrid(np.arange(size) + 0.5, np.arange(size) + 0.5, indexing="ij")
    # --- breast and parenchyma -------------------------------------------------------------------------------
    left = rng.random(n) < 0.5
    breast = {"wall": np.where(left, 0.0, s), "a": _u(rng, (0.62, 0.85), n) * s, "b": _u(rng, (0.4, 0.49), n) * s,
              "cy": s / 2 + rng.normal(0, 0.03 * s, n)}
    ell = (((xx[None] - breast["wall"][:, None, None]) / breast["a"][:, None, None]) ** 2
           + ((yy[None] - breast["cy"][:, None, None]) / breast["b"][:, None, None]) ** 2)
    mask = expit((1.0 - np.sqrt(ell)) / 0.02)
    density = 1.0 - 0.35 * np.sqrt(np.clip(ell, 0, 1))  # tissue brighter towards the chest wall
    scale = _u(rng, getattr(cfg, f"{domain}_texture_scale"), n) * s
    texture = _smooth_noise(rng, n, size, scale) * _u(rng, getattr(cfg, f"{domain}_texture"), n)[:, None, None]
    tissue = (0.45 * density + texture) * mask

    # --- lesions ------------------------------------------------------------------------------------------------
    n_lesions = np.where(rng.random(n) < cfg.normal_fraction, 0,
                         1 + rng.choice(_MAX_SLOTS, size=n, p=list(cfg.lesion_count_probs)))
    present = np.arange(_MAX_SLOTS)[None] < n_lesions[:, None]
    cls = rng.choice(cfg.num_classes, size=(n, _MAX_SLOTS), p=list(cfg.weights))
    radius = np.select([cls == 0, cls == 1],
                       [_u(rng, cfg.mass_radius, (n, _MAX_SLOTS)), _u(rng, cfg.spiculated_radius, (n, _MAX_SLOTS))],
                       _u(rng, cfg.cluster_radius, (n, _MAX_SLOTS))) * s
    reach = np.where(cls == 1, 1.0 + _u(rng, cfg.spicule_length, (n, _MAX_SLOTS)), 1.0)
    centres, present = _place(rng, n, size, breast, radius * reach, present)
    elong = np.where(cls == 0, _u(rng, cfg.mass_elongation, (n, _MAX_SLOTS)), 1.0)
    theta0 = rng.uniform(0, np.pi, (n, _MAX_SLOTS))
    spikes = rng.integers(cfg.spicule_count[0], cfg.spicule_count[1] + 1, (n, _MAX_SLOTS))
    contrast = np.where(cls == 2, _u(rng, cfg.calcification_contrast, (n, _MAX_SLOTS)),
                        _u(rng, cfg.lesion_contrast, (n, _MAX_SLOTS)))

    # lesions are rendered on (n, slots, P, P) patches around their centres, then added into the images
    half = int(np.ceil((radius * reach).max())) + 3
    p = 2 * half
    origin = np.floor(centres).astype(np.int64) - half  # (n, slots, 2) row, col of the patch's corner
    grid = np.arange(p) + 0.5
    dy = origin[..., 0, None, None] + grid[None, None, :, None] - centres[..., 0, None, None]
    dx = origin[..., 1, None, None] + grid[None, None, None, :] - centres[..., 1, None, None]
    c, si = np.cos(theta0)[..., None, None], np.sin(theta0)[..., None, None]
    u, v = c * dx + si * dy, -si * dx + c * dy
    r = radius[..., None, None]
    dist = np.sqrt((u / r) ** 2 + (v / (r * elong[..., None, None])) ** 2)
    spiculated = (cls == 1)[..., None, None]
    star = np.maximum(np.cos(spikes[..., None, None] * np.arctan2(v, u)), 0.0) ** 12  # narrow spikes
    extent = np.where(spiculated, 1.0 + (reach[..., None, None] - 1.0) * star, 1.0)
    footprint = expit((extent - dist) / np.where(spiculated, 0.06, 0.12))
    profile = footprint * np.where(spiculated & (dist > 1.0), 0.7, 1.0)  # fainter spicules
    # calcification clusters: tiny dots inside the cluster disc (rendered only where they occur)
    calc = cls == 2
    idx = np.nonzero(calc & present)
    if len(idx[0]):
        m = len(idx[0])
        dots = np.zeros((m, p, p))
        n_dots = rng.integers(cfg.cluster_dots[0], cfg.cluster_dots[1] + 1, m)
        for d in range(cfg.cluster_dots[1]):
            ang, rad = rng.uniform(0, 2 * np.pi, m), np.sqrt(rng.random(m)) * radius[idx]
            py, px = dy[idx][:, :, :1] - rad[:, None, None] * np.sin(ang)[:, None, None], \
                dx[idx][:, :1, :] - rad[:, None, None] * np.cos(ang)[:, None, None]
            dots += np.exp(-(py**2 + px**2) / 1.2) * (d < n_dots)[:, None, None]
        profile[idx] = np.minimum(dots, 1.0)
    profile = profile * present[..., None, None]

    rows = origin[..., 0, None, None] + np.arange(p)[None, None, :, None] + p  # indices into the padded image
    cols = origin[..., 1, None, None] + np.arange(p)[None, None, None, :] + p
    which = np.broadcast_to(np.arange(n)[:, None, None, None], profile.shape)
    padded = np.zeros((n, size + 2 * p, size + 2 * p))
    np.add.at(padded, (which, rows, cols), profile * contrast[..., None, None])
    lesions = padded[:, p : p + size, p : p + size]

    # --- boxes: tight around the visible part (profile > 0.5) --------------------------------------------------
    on = profile > 0.5
    on_rows, on_cols = on.any(3), on.any(2)  # (n, slots, P)
    visible = present & on_rows.any(2)
    first_r, last_r = on_rows.argmax(2), p - 1 - on_rows[..., ::-1].argmax(2)
    first_c, last_c = on_cols.argmax(2), p - 1 - on_cols[..., ::-1].argmax(2)
    boxes_all = np.stack([first_c, first_r, last_c + 1, last_r + 1], -1) + np.concatenate([origin[..., ::-1]] * 2, -1)
    boxes_all = boxes_all.astype(np.float32) + np.where(calc[..., None], [-1, -1, 1, 1], 0)  # dots are blurry
    boxes_all = np.clip(boxes_all, 0, size).astype(np.float32)

    # --- acquisition --------------------------------------------------------------------------------------------
    image = tissue + lesions * mask
    level = 0.45 * density * mask
    gain = _u(rng, getattr(cfg, f"{domain}_contrast"), n)[:, None, None]
    image = level + gain * (image - level)
    image = image + _u(rng, getattr(cfg, f"{domain}_background"), n)[:, None, None] * (1.0 - mask)
    sigma = _u(rng, getattr(cfg, f"{domain}_blur"), n) * s / 128.0
    image = _blur(image, sigma)
    image = np.clip(image, 0.0, 1.0) ** _u(rng, getattr(cfg, f"{domain}_gamma"), n)[:, None, None]
    image = image + rng.standard_normal(image.shape) * _u(rng, getattr(cfg, f"{domain}_noise"), n)[:, None, None]
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    boxes = [boxes_all[i][visible[i]] for i in range(n)]
    labels = [cls[i][visible[i]].astype(np.int64) for i in range(n)]
    return image, boxes, labels


def make_lesion_images(
    rng: np.random.Generator, n: int, *, size: int = 128, domain: str = "source",
    cfg: SyntheticLesionConfig | None = None,
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """``n`` synthetic images of one domain with their boxes and labels.

    Args:
        rng: the random generator.
        n: number of images.
        size: image side (>= 32).
        domain: ``source`` or ``target``.
        cfg: appearance (default :class:`SyntheticLesionConfig`).

    Returns:
        ``(images float32 (n, size, size) in [0, 1], boxes [(N_i, 4) float32 xyxy], labels [(N_i,) int64])``.

    Example:
        >>> imgs, boxes, labels = make_lesion_images(np.random.default_rng(0), 5, size=64, domain="target")
        >>> imgs.shape, len(boxes), all(b.shape[1] == 4 for b in boxes)
        ((5, 64, 64), 5, True)
    """
    cfg = cfg or SyntheticLesionConfig()
    if domain not in ("source", "target"):
        raise ValueError(f"domain must be 'source' or 'target', got {domain!r}")
    if size < 32:
        raise ValueError(f"size must be >= 32, got {size}")
    images, boxes, labels = [], [], []
    for start in range(0, n, _CHUNK):
        img, b, lab = _render_chunk(rng, min(_CHUNK, n - start), size, cfg, domain)
        images.append(img)
        boxes += b
        labels += lab
    out = np.concatenate(images) if images else np.zeros((0, size, size), np.float32)
    return out, boxes, labels


# --- simulated expert ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class SyntheticExpertConfig:
    """A simulated expert (spec §3): noisy copies of the ground truth.

    ``variant``: ``clean`` (as described), ``shifted`` (every box moved by ``shift_fraction`` of its size right and
    down) or ``wrong_frame`` (boxes in the frame of the image scaled by ``wrong_frame_scale``, the reference's
    untransformed-coordinates defect seen from the other side).
    """

    iou: _Range = (0.6, 0.9)
    miss_rate: float = 0.2
    false_positives_per_image: float = 0.3
    score: _Range = (0.6, 1.0)
    class_flip: float = 0.1
    variant: str = "clean"
    shift_fraction: float = 0.5
    wrong_frame_scale: float = 1.5
    no_box_prompt: str = "lesion"

    def __post_init__(self) -> None:
        if self.variant not in ("clean", "shifted", "wrong_frame"):
            raise ValueError(f"variant must be 'clean', 'shifted' or 'wrong_frame', got {self.variant!r}")
        if not 0 < self.iou[0] <= self.iou[1] <= 1:
            raise ValueError(f"iou must be a range in (0, 1], got {self.iou}")


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes a (..., 4) and b (..., 4), elementwise."""
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    inter = w * h
    area = lambda x: (x[..., 2] - x[..., 0]) * (x[..., 3] - x[..., 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


class SyntheticExpert:
    """Noisy expert boxes from ground truth: each box missed with ``miss_rate``, else jittered to an IoU drawn from
    ``iou``; Poisson(``false_positives_per_image``) random boxes added; scores U(``score``); classes flipped with
    ``class_flip``.

    Example:
        >>> expert = SyntheticExpert(SyntheticExpertConfig(miss_rate=0.0, false_positives_per_image=0.0))
        >>> gt = np.array([[10, 10, 30, 30]], np.float32)
        >>> boxes, scores, labels = expert.predict(np.random.default_rng(0), gt, np.array([0]), (64, 64), 2)
        >>> boxes.shape, bool(0.55 <= _iou(boxes[0], gt[0]) <= 0.95), bool(0.6 <= scores[0] <= 1.0)
        ((1, 4), True, True)
    """

    def __init__(self, cfg: SyntheticExpertConfig | None = None) -> None:
        self.cfg = cfg or SyntheticExpertConfig()

    def _jitter(self, rng: np.random.Generator, box: np.ndarray, target: float) -> np.ndarray:
        w, h = box[2] - box[0], box[3] - box[1]
        cand = np.empty((64, 4))
        shift = rng.normal(0, 0.25, (64, 2)) * [w, h]
        scale = np.exp(rng.normal(0, 0.3, (64, 2)))
        cx, cy = (box[0] + box[2]) / 2 + shift[:, 0], (box[1] + box[3]) / 2 + shift[:, 1]
        cand[:, 0], cand[:, 2] = cx - w * scale[:, 0] / 2, cx + w * scale[:, 0] / 2
        cand[:, 1], cand[:, 3] = cy - h * scale[:, 1] / 2, cy + h * scale[:, 1] / 2
        return cand[np.argmin(np.abs(_iou(cand, box[None]) - target))]

    def predict(self, rng: np.random.Generator, boxes: np.ndarray, labels: np.ndarray, image_hw: Sequence[int],
                num_classes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Expert boxes for one image: ``(boxes (M, 4) float32 xyxy, scores (M,), labels (M,) int64)``."""
        cfg = self.cfg
        height, width = int(image_hw[0]), int(image_hw[1])
        out_boxes, out_labels = [], []
        for box, label in zip(np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(labels)):
            if rng.random() < cfg.miss_rate:
                continue
            out_boxes.append(self._jitter(rng, box, rng.uniform(*cfg.iou)))
            flip = num_classes > 1 and rng.random() < cfg.class_flip
            out_labels.append((int(label) + rng.integers(1, num_classes)) % num_classes if flip else int(label))
        for _ in range(rng.poisson(cfg.false_positives_per_image)):
            side = rng.uniform(0.05, 0.15, 2) * [width, height]
            x0, y0 = rng.uniform(0, width - side[0]), rng.uniform(0, height - side[1])
            out_boxes.append(np.array([x0, y0, x0 + side[0], y0 + side[1]]))
            out_labels.append(int(rng.integers(0, num_classes)))
        result = np.asarray(out_boxes, np.float64).reshape(-1, 4)
        if cfg.variant == "shifted":
            wh = result[:, 2:] - result[:, :2]
            result = result + np.tile(wh * cfg.shift_fraction, 2)
        result[:, 0::2] = np.clip(result[:, 0::2], 0, width)
        result[:, 1::2] = np.clip(result[:, 1::2], 0, height)
        if cfg.variant == "wrong_frame":
            result = result * cfg.wrong_frame_scale
        keep = (result[:, 2] - result[:, 0] >= 1) & (result[:, 3] - result[:, 1] >= 1)
        scores = rng.uniform(*cfg.score, len(result))
        return (result[keep].astype(np.float32), scores[keep].astype(np.float32),
                np.asarray(out_labels, np.int64).reshape(-1)[keep])

    def write_csv(self, path: str | Path, rng: np.random.Generator, records: Sequence[DetectionRecord],
                  class_names: Sequence[str]) -> Path:
        """Write the expert CSV (spec §3) for ``records``: one row per box (``X, Y, W, H`` integer pixels as from
        ``cv2.boundingRect``, ``Prompt`` the class name), ``<name>,<no_box_prompt>,0,0,NA,NA,NA,NA`` for an image
        without boxes (as the reference writes it)."""
        path = Path(path)
        with path.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(EXPERT_CSV_COLUMNS)
            for rec in records:
                boxes, scores, labels = self.predict(rng, rec.boxes, rec.labels, (rec.height, rec.width),
                                                     len(class_names))
                name = Path(rec.file).name
                if not len(boxes):
                    writer.writerow([name, self.cfg.no_box_prompt, 0, 0, "NA", "NA", "NA", "NA"])
                for box, score, label in zip(boxes, scores, labels):
                    x0, y0 = int(np.floor(box[0])), int(np.floor(box[1]))
                    w, h = max(1, int(np.ceil(box[2])) - x0), max(1, int(np.ceil(box[3])) - y0)
                    mean = score * rng.uniform(0.7, 0.95)
                    writer.writerow([name, class_names[label], f"{mean:.4f}", f"{score:.4f}", x0, y0, w, h])
        return path


# --- writing the two domains ----------------------------------------------------------------------------------------


def _write_split(rng: np.random.Generator, folder: Path, split: str, prefix: str, n: int, size: int,
                 domain: str, cfg: SyntheticLesionConfig) -> list[DetectionRecord]:
    images_dir = folder / "images" / split
    images_dir.mkdir(parents=True, exist_ok=True)
    images, boxes, labels = make_lesion_images(rng, n, size=size, domain=domain, cfg=cfg)
    records = []
    for i in range(n):
        file = images_dir / f"{prefix}_{split}_{i:05d}.png"
        Image.fromarray(np.round(images[i] * 255).astype(np.uint8)).save(file, optimize=False, compress_level=1)
        records.append(DetectionRecord(i + 1, file, size, size, boxes[i], labels[i]))
    write_coco_split(folder, split, records, cfg.class_names)
    return records


def write_lesion_domains(
    root: str | Path,
    *,
    num_classes: int = 2,
    n_source_train: int = 400,
    n_source_val: int = 100,
    n_target_train: int = 400,
    n_target_val: int = 150,
    size: int = 128,
    seed: int = 0,
    expert: SyntheticExpertConfig | None = None,
    config: SyntheticLesionConfig | None = None,
) -> dict[str, Any]:
    """Write the synthetic source and target domains in the COCO layout and the simulated expert CSV.

    Layout: ``root/source/`` and ``root/target/``, each ``annotations/instances_{train,val}.json`` and
    ``images/{train,val}/<s|t>_<split>_NNNNN.png`` (8-bit); ``root/target/expert_boxes.csv`` for the target
    **train** images.

    Args:
        root: output folder (created).
        num_classes: K in {1, 2, 3} (overrides ``config.num_classes``).
        n_source_train, n_source_val, n_target_train, n_target_val: images per split.
        size: image side in pixels.
        seed: the data are a pure function of the arguments.
        expert: the simulated expert (default :class:`SyntheticExpertConfig`).
        config: appearance and domain shift (default :class:`SyntheticLesionConfig`).

    Returns:
        ``{"root", "source", "target", "expert_csv"}`` paths, ``"class_names"`` and ``"counts"``
        (``{"source/train": {"images", "boxes", "normals", "per_class": [...]}, ...}``).

    Example:
        >>> import tempfile
        >>> out = write_lesion_domains(tempfile.mkdtemp(), num_classes=3, n_source_train=3, n_source_val=1,
        ...                            n_target_train=3, n_target_val=1, size=48)
        >>> out["class_names"], out["counts"]["target/train"]["images"], out["expert_csv"].name
        (('mass', 'spiculated', 'calcification_cluster'), 3, 'expert_boxes.csv')
    """
    cfg = config or SyntheticLesionConfig(num_classes=num_classes)
    if cfg.num_classes != num_classes:
        cfg = replace(cfg, num_classes=num_classes, class_weights=None)
    root = Path(root)
    counts: dict[str, dict[str, Any]] = {}
    splits = {
        ("source", "train"): n_source_train, ("source", "val"): n_source_val,
        ("target", "train"): n_target_train, ("target", "val"): n_target_val,
    }
    target_train: list[DetectionRecord] = []
    for k, ((domain, split), n) in enumerate(splits.items()):
        if n < 1:
            raise ValueError(f"need at least one image per split, got {n} for {domain}/{split}")
        rng = np.random.default_rng([seed, k])
        records = _write_split(rng, root / domain, split, domain[0], n, size, domain, cfg)
        all_labels = np.concatenate([r.labels for r in records])
        counts[f"{domain}/{split}"] = {
            "images": n, "boxes": int(all_labels.size), "normals": sum(len(r.boxes) == 0 for r in records),
            "per_class": np.bincount(all_labels, minlength=cfg.num_classes).tolist(),
        }
        if (domain, split) == ("target", "train"):
            target_train = records
    expert_csv = SyntheticExpert(expert).write_csv(
        root / "target" / "expert_boxes.csv", np.random.default_rng([seed, 99]), target_train, cfg.class_names
    )
    logger.info("wrote synthetic lesion domains (K=%d, %d^2) to %s: %s", cfg.num_classes, size, root, counts)
    return {"root": root, "source": root / "source", "target": root / "target", "expert_csv": expert_csv,
            "class_names": cfg.class_names, "counts": counts}
