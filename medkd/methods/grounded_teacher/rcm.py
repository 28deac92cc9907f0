# SPDX-License-Identifier: Apache-2.0
"""The relational context module (RCM) of Grounded Teacher: class-confusion matrices, crop banks, semantic
augmentation (SA) and the semantic-aware loss weights (SAL).

GT's ``GT/rcm.py`` is CAT's ``cat/icrm.py`` renamed (Kennerley et al., "CAT: Exploiting Inter-Class Dynamics for
Domain Adaptive Object Detection", CVPR 2024; Ashraf et al., arXiv 2504.15404). The spec is section 2.3 of
``specs/grounded_teacher.md``.

* **Confusion EMA.** ``C`` is ``(K, K)``, rows = truth, columns = prediction, each row an EMA of the row-normalised
  counts of ``(g, p)`` pairs (background dropped). Source ``alpha_t = 0.5 + 0.49 (t / (B/2))^3`` for ``t < B/2``,
  then 0.99; target the same shifted by ``B``.
* **SAL.** :func:`sal_matrix` (steps 1-2) then :func:`sal_anchor_weights` (steps 3-4), a callable for
  ``RetinaNet2D(..., anchor_weights=...)``.
* **SA.** :func:`semantic_augment` blends a bank crop of a confusable class into a box and gives the box the soft
  target ``lambda e_g + (1 - lambda) e_c``.

At ``K = 1`` every one of these is an identity (the matrix is ``1 x 1``: every box is "minority" and draws its own
class); :class:`RelationalContext` then switches itself off and says so once in the log.

Example:
    >>> import torch
    >>> ema = ConfusionEMA(2)
    >>> ema.update(torch.tensor([[0, 0], [0, 1], [1, 1], [1, -1]]), alpha=0.5)
    >>> ema.matrix
    tensor([[0.2500, 0.2500],
            [0.0000, 0.5000]])
    >>> w = sal_anchor_weights(sal_matrix(ema.matrix))(torch.tensor([0, 0, 1]), torch.tensor([0, 1, -1]))
    >>> w.shape
    torch.Size([3])
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = [
    "confusion_alpha",
    "ConfusionEMA",
    "sal_matrix",
    "sal_anchor_weights",
    "CropBank",
    "semantic_augment",
    "RelationalContext",
]

logger = logging.getLogger(__name__)

AnchorWeights = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

_ALPHA_START = 0.5
_ALPHA_END = 0.99


def confusion_alpha(t: int, burn_in: int, *, target: bool) -> float:
    """The EMA keep rate of the confusion matrix at iteration ``t`` (spec 2.3).

    Source: ``0.5 + 0.49 (t / (B/2))^3`` for ``t < B/2``, then ``0.99``. Target: the same with ``t - B`` (the target
    matrix starts at the burn-in ``B``; before it the rate stays at 0.5).

    Args:
        t: the iteration (0-based).
        burn_in: ``B``, the burn-in length in iterations.
        target: the target matrix's schedule instead of the source's.

    Example:
        >>> confusion_alpha(0, 100, target=False), confusion_alpha(25, 100, target=False)
        (0.5, 0.56125)
        >>> confusion_alpha(50, 100, target=False), confusion_alpha(125, 100, target=True)
        (0.99, 0.56125)
    """
    s = float(t - burn_in) if target else float(t)
    half = burn_in / 2.0
    if half <= 0 or s >= half:
        return _ALPHA_END
    return _ALPHA_START + (_ALPHA_END - _ALPHA_START) * (max(s, 0.0) / half) ** 3


class ConfusionEMA:
    """An EMA class-confusion matrix ``C`` (rows = truth ``g``, columns = prediction ``p``), rows normalised.

    Only the rows of classes seen in an update change: ``C[g] <- alpha C[g] + (1 - alpha) C_hat[g]`` where
    ``C_hat[g]`` is the row-normalised count of the update's pairs with truth ``g``. Pairs with a background
    (``-1``, or any value outside ``0..K-1``) on either side are dropped.

    Args:
        num_classes: ``K``.
    """

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = int(num_classes)
        self.matrix = torch.zeros(self.num_classes, self.num_classes)

    def update(self, pairs: torch.Tensor, alpha: float) -> None:
        """Fold one iteration's ``(g, p)`` pairs, a LongTensor ``(M, 2)``, into the matrix with keep rate ``alpha``."""
        pairs = torch.as_tensor(pairs).reshape(-1, 2).long().cpu()
        k = self.num_classes
        pairs = pairs[((pairs >= 0) & (pairs < k)).all(dim=1)]
        if pairs.numel() == 0:
            return
        counts = torch.zeros(k * k).index_add_(0, pairs[:, 0] * k + pairs[:, 1], torch.ones(len(pairs))).view(k, k)
        sums = counts.sum(dim=1)
        seen = sums > 0
        c_hat = counts[seen] / sums[seen, None]
        self.matrix[seen] = self.matrix[seen] * alpha + c_hat * (1.0 - alpha)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"matrix": self.matrix.clone()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        matrix = torch.as_tensor(state["matrix"], dtype=torch.float32)
        if matrix.shape != (self.num_classes, self.num_classes):
            raise ValueError(f"confusion matrix of shape {tuple(matrix.shape)} for K = {self.num_classes}")
        self.matrix = matrix.clone()


def sal_matrix(confusion: torch.Tensor) -> torch.Tensor:
    """SAL steps 1-2: the weight matrix ``W`` from a confusion matrix ``C`` ``(K, K)``.

    1. ``W = C``; zero rows and a zero diagonal -> ``1/K``; other zeros -> ``1e-3``.
    2. Rows with sum <= 1: ``W_ij <- sqrt(W_ij / W_ii)`` (``j != i``); ``W_ii <- 1 - sqrt(1 - W_ii)``.

    Example:
        >>> sal_matrix(torch.tensor([[0.75, 0.25], [0.0, 0.0]]))
        tensor([[0.5000, 0.5774],
                [1.0000, 0.2929]])
    """
    w = torch.as_tensor(confusion, dtype=torch.float32).clone()
    k = w.shape[0]
    w[w.sum(dim=1) == 0] = 1.0 / k
    diag = torch.arange(k)
    d = w[diag, diag]
    w[diag, diag] = torch.where(d == 0, torch.full_like(d, 1.0 / k), d)
    w[w == 0] = 1e-3
    rows = w.sum(dim=1) <= 1
    d = w[diag, diag].clone()
    scaled = torch.sqrt(w / d[:, None])
    scaled[diag, diag] = 1.0 - torch.sqrt((1.0 - d).clamp_min(0.0))
    w[rows] = scaled[rows]
    return w


def sal_anchor_weights(weights: torch.Tensor) -> AnchorWeights:
    """SAL steps 3-4 as a callable ``(g, p) -> w`` for ``RetinaNet2D(..., anchor_weights=...)``.

    Per positive anchor with truth ``g`` and prediction ``p`` (``-1`` = background): correct (``p = g``) ->
    ``1 - W_gg``; confused foreground (``p != g``) -> ``W_gp``; background -> 1. The correct and confused weights
    are scaled together to mean 1 (zeros become ``1e-5``), then every weight becomes ``(w + 1) / 2``.

    Args:
        weights: ``W`` from :func:`sal_matrix`, ``(K, K)``.

    Returns:
        a function of two LongTensors ``(M,)`` returning float weights ``(M,)`` on their device.

    Example:
        >>> fn = sal_anchor_weights(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
        >>> fn(torch.tensor([0, 1, 1]), torch.tensor([0, 0, -1]))
        tensor([1., 1., 1.])
    """
    table = torch.as_tensor(weights, dtype=torch.float32).detach().clone()

    def anchor_weights(g: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
        w_table = table.to(g.device)
        g = g.long()
        p = p.long()
        w = torch.ones(g.shape, dtype=torch.float32, device=g.device)
        fg = (p >= 0) & (g >= 0)
        if not bool(fg.any()):
            return w
        w[fg] = w_table[g[fg], p[fg]]
        correct = fg & (p == g)
        w[correct] = 1.0 - w_table[g[correct], g[correct]]
        mean = w[fg].mean()
        if float(mean) == 0.0:
            mean = torch.ones((), device=g.device)
        w[fg & (w == 0)] = 1e-5
        w[fg & torch.isnan(w)] = 1e-5
        w[fg] = w[fg] / mean
        w = (w + 1.0) / 2.0
        return torch.nan_to_num(w, nan=0.0)

    return anchor_weights


class CropBank:
    """Per class, the last ``size`` box crops (``(C, h, w)`` CPU tensors) seen in training images.

    Args:
        num_classes: ``K``.
        size: crops kept per class (the reference keeps 50).

    Example:
        >>> bank = CropBank(2, size=3)
        >>> bank.add(torch.rand(1, 1, 16, 16), [{"boxes": torch.tensor([[2.0, 2, 10, 12]] * 5),
        ...                                       "labels": torch.tensor([1] * 5)}])
        >>> len(bank[0]), len(bank[1]), tuple(bank[1][0].shape)
        (0, 3, (1, 10, 8))
    """

    def __init__(self, num_classes: int, size: int = 50) -> None:
        self.num_classes = int(num_classes)
        self.size = int(size)
        self._crops: list[deque[torch.Tensor]] = [deque(maxlen=self.size) for _ in range(self.num_classes)]

    def __getitem__(self, cls: int) -> deque[torch.Tensor]:
        return self._crops[int(cls)]

    def __len__(self) -> int:
        return sum(len(c) for c in self._crops)

    def add(self, images: torch.Tensor, targets: Sequence[Mapping[str, Any]]) -> None:
        """Store the crop of every box of every image (``images`` ``(B, C, H, W)``, one target dict per image)."""
        for image, target in zip(images, targets):
            boxes, labels = _boxes_labels(target)
            for box, label in zip(_int_boxes(boxes, image.shape[-2:]).tolist(), labels.tolist()):
                x1, y1, x2, y2 = box
                if x2 > x1 and y2 > y1 and 0 <= label < self.num_classes:
                    self._crops[label].append(image[:, y1:y2, x1:x2].detach().to("cpu", copy=True))

    def state_dict(self) -> dict[str, Any]:
        return {"size": self.size, "crops": [list(c) for c in self._crops]}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        crops = state["crops"]
        if len(crops) != self.num_classes:
            raise ValueError(f"crop bank for {len(crops)} classes, expected {self.num_classes}")
        self._crops = [deque((torch.as_tensor(t) for t in c), maxlen=self.size) for c in crops]


def _boxes_labels(target: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
    boxes = torch.as_tensor(target["boxes"], dtype=torch.float32).reshape(-1, 4)
    labels = torch.as_tensor(target["labels"]).reshape(-1).long()
    return boxes, labels


def _int_boxes(boxes: torch.Tensor, hw: Sequence[int]) -> torch.Tensor:
    """Integer pixel boxes (truncated, as the reference's ``.long()``), clipped to the image."""
    h, w = int(hw[0]), int(hw[1])
    out = boxes.detach().cpu().long()
    out[:, 0::2] = out[:, 0::2].clamp(0, w)
    out[:, 1::2] = out[:, 1::2].clamp(0, h)
    return out


def _uniform(generator: torch.Generator | None) -> float:
    return float(torch.rand((), generator=generator))


def _beta_half(generator: torch.Generator | None) -> float:
    """A draw of Beta(0.5, 0.5), the arcsine law: ``sin^2(pi U / 2)`` with ``U`` uniform."""
    return math.sin(math.pi * _uniform(generator) / 2.0) ** 2


def semantic_augment(
    images: torch.Tensor,
    targets: Sequence[Mapping[str, Any]],
    confusion: torch.Tensor,
    bank: CropBank,
    generator: torch.Generator | None,
    *,
    target_domain: bool,
    alt_bank: CropBank | None = None,
    alt_prob: float = 0.2,
    skip_image_prob: float = 0.5,
    min_crop_fraction: float = 0.4,
) -> tuple[torch.Tensor, list[dict[str, Any]]]:
    """Semantic augmentation (CAT's ``mix_crop_new``, resize variant): mix a confusable class's crop into boxes.

    Per image (skipped with probability ``skip_image_prob``) and per box of class ``g``: if ``C_gg`` exceeds the mean
    diagonal (majority), ``c`` is drawn from column ``g`` (the classes mistaken for ``g``, ``g`` itself zeroed);
    else (minority) from row ``g``, and the box is left alone on the target domain. Skipped when ``c = g``, the
    drawn weights sum below 0.1, the bank holds no crop of ``c``, a uniform draw is below 0.5, or the crop is
    smaller than ``min_crop_fraction`` of the box on a side. ``lambda ~ Beta(0.5, 0.5)``, then ``min(lambda,
    1 - lambda)`` (majority) or ``max`` (minority); the box becomes ``lambda I_box + (1 - lambda) resize(crop)``,
    its soft target ``lambda e_g + (1 - lambda) e_c`` and its hard label the argmax of that (``c`` for majority,
    ``g`` for minority).

    Args:
        images: ``(B, C, H, W)``; not modified (a copy is returned).
        targets: one dict per image with ``boxes`` ``(N, 4)`` xyxy and ``labels`` ``(N,)``; not modified.
        confusion: the matrix ``C`` ``(K, K)`` to draw from.
        bank: crops to mix in.
        generator: the random source (every draw goes through it).
        target_domain: the target (pseudo-labelled) batch: minority boxes are not augmented.
        alt_bank: a second bank (the target bank on the source batch, or the reverse), used for class ``c`` when
            it holds crops of ``c`` and the batch is the target's, the box is a minority one, or with probability
            ``alt_prob`` (the reference's bank choice).
        alt_prob: see ``alt_bank``.
        skip_image_prob: probability of leaving an image untouched (reference ``MIX_RATIO`` 0.5).
        min_crop_fraction: smallest crop side relative to the box side.

    Returns:
        ``(images, targets)``: new tensor and new dicts (other keys shallow-copied) with ``labels`` and
        ``soft_labels`` ``(N, K)`` float32 whose rows sum to 1.

    Example:
        >>> bank = CropBank(2)
        >>> imgs = torch.zeros(1, 1, 32, 32)
        >>> tg = [{"boxes": torch.tensor([[4.0, 4, 20, 20]]), "labels": torch.tensor([0])}]
        >>> out, new = semantic_augment(imgs, tg, torch.eye(2), bank, torch.Generator().manual_seed(0),
        ...                             target_domain=False)
        >>> new[0]["soft_labels"]
        tensor([[1., 0.]])
    """
    conf = torch.as_tensor(confusion, dtype=torch.float32).cpu()
    k = conf.shape[0]
    diag = torch.diagonal(conf)
    class_mean = float(diag.mean())
    out_images = images.clone()
    out_targets: list[dict[str, Any]] = []
    for b, target in enumerate(targets):
        boxes, labels = _boxes_labels(target)
        labels = labels.clone()
        soft = F.one_hot(labels.clamp(0, k - 1), k).float()
        new_target = dict(target)
        if _uniform(generator) >= skip_image_prob and len(boxes):
            int_boxes = _int_boxes(boxes, images.shape[-2:])
            for i in range(len(boxes)):
                g = int(labels[i])
                if not 0 <= g < k:
                    continue
                minority = not float(conf[g, g]) > class_mean
                if minority and target_domain:
                    continue
                values = conf[g].clone() if minority else conf[:, g].clone()
                if not minority:
                    values[g] = 0.0
                if float(values.sum()) < 0.1:
                    continue
                c = int(torch.multinomial(values, 1, generator=generator))
                if c == g:
                    continue
                use_alt = alt_bank is not None and len(alt_bank[c]) > 0
                use_alt = use_alt and (target_domain or minority or _uniform(generator) < alt_prob)
                current = alt_bank if use_alt and alt_bank is not None else bank
                if _uniform(generator) < 0.5 or len(current[c]) == 0:
                    continue
                crops = current[c]
                crop = crops[int(torch.randint(len(crops), (), generator=generator))]
                lam = _beta_half(generator)
                lam = max(lam, 1.0 - lam) if minority else min(lam, 1.0 - lam)
                x1, y1, x2, y2 = int_boxes[i].tolist()
                h, w = y2 - y1, x2 - x1
                if h <= 0 or w <= 0 or crop.shape[-2] < min_crop_fraction * h or crop.shape[-1] < min_crop_fraction * w:
                    continue
                patch = out_images[b, :, y1:y2, x1:x2]
                resized = F.interpolate(
                    crop[None].to(patch.device, patch.dtype), size=(h, w), mode="bilinear", align_corners=False
                )[0]
                if resized.shape[0] != patch.shape[0]:
                    resized = resized.expand_as(patch)
                out_images[b, :, y1:y2, x1:x2] = lam * patch + (1.0 - lam) * resized
                soft[i] = 0.0
                soft[i, g] += lam
                soft[i, c] += 1.0 - lam
                labels[i] = g if minority else c
        new_target["labels"] = labels.to(torch.as_tensor(target["labels"]).device)
        new_target["soft_labels"] = soft.to(new_target["labels"].device)
        out_targets.append(new_target)
    return out_images, out_targets


class RelationalContext:
    """Both confusion matrices and both crop banks of GT's RCM, with the iteration schedules of spec 2.3.

    * the source matrix is updated on the labelled batch from iteration 0, the target matrix on the pseudo-labelled
      batch from ``B`` (:func:`confusion_alpha` rates);
    * SA on the target batch draws from ``(1 - r) C_src + r C_tgt``, ``r = (t - B) / blend_iters`` clipped to [0, 1];
    * SAL on the target batch uses ``C_src`` before ``B + target_sal_delay`` and ``C_tgt`` after.

    At ``K = 1`` (``enabled`` False) augmentation returns its inputs and :meth:`anchor_weights` returns ``None``;
    this is logged once.

    Args:
        num_classes: ``K``.
        burn_in: ``B`` in iterations.
        bank_size: crops kept per class (50).
        blend_iters: iterations over which the target matrix is blended in after ``B`` (1000).
        target_sal_delay: iterations after ``B`` before target SAL uses the target matrix (400).
        skip_image_prob: see :func:`semantic_augment`.
        alt_prob: see :func:`semantic_augment`.

    Example:
        >>> rc = RelationalContext(1, burn_in=10)
        >>> rc.enabled, rc.anchor_weights(5, target=False)
        (False, None)
    """

    def __init__(
        self,
        num_classes: int,
        burn_in: int,
        *,
        bank_size: int = 50,
        blend_iters: int = 1000,
        target_sal_delay: int = 400,
        skip_image_prob: float = 0.5,
        alt_prob: float = 0.2,
    ) -> None:
        self.num_classes = int(num_classes)
        self.burn_in = int(burn_in)
        self.blend_iters = int(blend_iters)
        self.target_sal_delay = int(target_sal_delay)
        self.skip_image_prob = float(skip_image_prob)
        self.alt_prob = float(alt_prob)
        self.enabled = self.num_classes >= 2
        self.source = ConfusionEMA(self.num_classes)
        self.target = ConfusionEMA(self.num_classes)
        self.source_bank = CropBank(self.num_classes, bank_size)
        self.target_bank = CropBank(self.num_classes, bank_size)
        if not self.enabled:
            logger.info("relational context module off at K = 1: semantic augmentation and SAL are identities")

    def update(self, pairs: torch.Tensor, t: int, *, target: bool) -> None:
        """Fold the ``(g, p)`` pairs of iteration ``t`` into the source or target matrix."""
        if not self.enabled:
            return
        ema = self.target if target else self.source
        ema.update(pairs, confusion_alpha(t, self.burn_in, target=target))

    def blend(self, t: int) -> float:
        """The weight ``r`` of the target matrix in target-domain SA at iteration ``t``."""
        if self.blend_iters <= 0:
            return 1.0 if t >= self.burn_in else 0.0
        return min(max((t - self.burn_in) / self.blend_iters, 0.0), 1.0)

    def sa_matrix(self, t: int, *, target: bool) -> torch.Tensor:
        """The matrix SA draws from at iteration ``t``."""
        if not target:
            return self.source.matrix
        r = self.blend(t)
        return (1.0 - r) * self.source.matrix + r * self.target.matrix

    def sal_confusion(self, t: int, *, target: bool) -> torch.Tensor:
        """The matrix SAL weights come from at iteration ``t``."""
        if target and t >= self.burn_in + self.target_sal_delay:
            return self.target.matrix
        return self.source.matrix

    def anchor_weights(self, t: int, *, target: bool) -> AnchorWeights | None:
        """The SAL callable for the detector at iteration ``t``, or ``None`` when the module is off."""
        if not self.enabled:
            return None
        return sal_anchor_weights(sal_matrix(self.sal_confusion(t, target=target)))

    def save_crops(self, images: torch.Tensor, targets: Sequence[Mapping[str, Any]], *, target: bool) -> None:
        """Add the boxes of a batch (weak view) to the source or target bank."""
        if self.enabled:
            (self.target_bank if target else self.source_bank).add(images, targets)

    def augment(
        self,
        images: torch.Tensor,
        targets: Sequence[Mapping[str, Any]],
        t: int,
        generator: torch.Generator | None,
        *,
        target: bool,
    ) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        """SA on a batch at iteration ``t``; the inputs unchanged (targets as new dicts) when the module is off."""
        if not self.enabled:
            return images, [dict(tg) for tg in targets]
        after_burn_in = t >= self.burn_in
        if target:
            bank, alt = self.source_bank, self.target_bank
        else:
            bank, alt = self.source_bank, (self.target_bank if after_burn_in else None)
        return semantic_augment(
            images,
            targets,
            self.sa_matrix(t, target=target),
            bank,
            generator,
            target_domain=target,
            alt_bank=alt,
            alt_prob=self.alt_prob,
            skip_image_prob=self.skip_image_prob,
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_classes": self.num_classes,
            "source": self.source.state_dict(),
            "target": self.target.state_dict(),
            "source_bank": self.source_bank.state_dict(),
            "target_bank": self.target_bank.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(f"relational context of K = {state['num_classes']}, expected K = {self.num_classes}")
        self.source.load_state_dict(state["source"])
        self.target.load_state_dict(state["target"])
        self.source_bank.load_state_dict(state["source_bank"])
        self.target_bank.load_state_dict(state["target_bank"])
