# SPDX-License-Identifier: Apache-2.0
"""A small token (ViT-style) encoder for images and video clips, V-JEPA multi-block masks, a masked-token predictor,
the ``salt_vit`` classifier (task ``classification``) and the ``salt_frames`` frame encoder (task ``video_encoder``).

* :class:`TokenEncoder`: patch embedding (2-D ``(B, C, H, W)``, patches ``patch x patch``) or tubelet embedding
  (3-D clips ``(B, C, T, H, W)``, tubelets ``tubelet x patch x patch``; time after channels, as ``Conv3d``: a
  SurgFUTR clip ``(B, T, C, H, W)`` is passed as ``clip.transpose(1, 2)``), a fixed sin-cos or learned positional
  embedding, ``depth`` pre-norm transformer blocks of width ``dim`` and a final LayerNorm. ``encoder(x, visible)``
  encodes only the tokens at ``visible`` ``(B, N_visible)``: the others are dropped before the first block, so a
  masked patch never reaches the encoder (embedding is per patch, without overlap).
* :func:`multiblock_mask` / :class:`MultiBlockMasking`: V-JEPA's multi-block masks (Bardes et al., "Revisiting
  Feature Prediction for Learning Visual Representations from Video", 2024: 8 blocks at spatial scale 0.15 plus 2
  at 0.7, aspect ratio 0.75-1.5, full temporal extent), sampled for a whole batch at once from a seed.
* :class:`MaskedPredictor`: visible-token features plus learned mask tokens at the masked positions through
  ``depth`` transformer blocks of width ``width`` -> a prediction per masked token (I-JEPA / V-JEPA predictor,
  MAE decoder).
* ``salt_vit`` (:class:`SaltViT`): encoder, mean over tokens, linear head (after a BatchNorm without affine
  parameters, MAE's linear-probe head, unless ``head_norm=False``); taps ``encoder`` ``(B, N, dim)``, ``pool``
  ``(B, dim)``, ``head`` ``(B, num_classes)``. The SALT strategy (:mod:`medkd.distill.strategies.salt`) pretrains
  its encoder and trains the head as a linear probe.
* ``salt_frames`` (:class:`FrameTokenEncoder`): the same encoder on each frame of a clip ``(B, T, C, H, W)``, mean
  over tokens and a linear projection -> per-frame features ``(B, T, feature_dim)``: SurgFUTR's frame encoder
  (``model.encoder: salt_frames``), which can start from a SALT-pretrained encoder (``model.encoder_weights``).

Example:
    >>> import torch
    >>> from medkd.nets import create_net
    >>> net = create_net("salt_vit", in_channels=1, num_classes=5, image_size=16, dim=32, depth=1, heads=2)
    >>> net(torch.rand(2, 1, 16, 16)).shape, net.encoder.num_tokens
    (torch.Size([2, 5]), 16)
    >>> masks = multiblock_mask(2, net.encoder.grid, blocks=2, scale=0.25, seed=0)
    >>> net.encoder(torch.rand(2, 1, 16, 16), visible=masks.visible).shape == (2, masks.visible.shape[1], 32)
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import torch
from torch import nn

from medkd.nets.factory import register_net
from medkd.registry import resolve_option

__all__ = [
    "FrameTokenEncoder",
    "MaskedPredictor",
    "LinearHead",
    "MultiBlockMasking",
    "PosEmbed",
    "SaltViT",
    "TokenEncoder",
    "TokenMasks",
    "TokenMeanPool",
    "gather_tokens",
    "multiblock_mask",
    "salt_frames",
    "salt_vit",
    "sincos_pos_embed",
]


class PosEmbed(StrEnum):
    """Positional embedding: ``sincos`` (fixed, as MAE / V-JEPA) or ``learned``."""

    SINCOS = "sincos"
    LEARNED = "learned"


def sincos_pos_embed(dim: int, grid: Sequence[int]) -> torch.Tensor:
    """Fixed sin-cos positional embedding of a token grid: ``(prod(grid), dim)``, tokens in row-major grid order.

    Each axis gets an even share of the channels (``sin`` then ``cos`` of ``position * 10000^(-i / half)``); left-over
    channels are zero.

    Args:
        dim: channels (at least 2 per axis).
        grid: tokens per axis, ``(H', W')`` or ``(T', H', W')``.

    Raises:
        ValueError: ``dim`` below ``2 * len(grid)``.

    Example:
        >>> sincos_pos_embed(8, (2, 3)).shape
        torch.Size([6, 8])
    """
    per_axis = (dim // len(grid)) // 2 * 2
    if per_axis < 2:
        raise ValueError(f"dim must be at least {2 * len(grid)} for a {len(grid)}-axis grid, got {dim}")
    half = per_axis // 2
    omega = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid], indexing="ij")
    angles = torch.stack([c.reshape(-1) for c in coords], 1)[:, :, None] * omega  # (N, axes, half)
    emb = torch.cat([angles.sin(), angles.cos()], dim=2).flatten(1)  # (N, axes * per_axis)
    return nn.functional.pad(emb, (0, dim - emb.shape[1])).float()


def gather_tokens(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """The tokens ``(B, N, D)`` at ``index`` ``(B, K)`` -> ``(B, K, D)``.

    Example:
        >>> gather_tokens(torch.arange(6.0).view(1, 3, 2), torch.tensor([[2, 0]])).tolist()
        [[[4.0, 5.0], [0.0, 1.0]]]
    """
    return tokens.gather(1, index[..., None].expand(-1, -1, tokens.shape[-1]))


def _blocks(dim: int, depth: int, heads: int, mlp_ratio: float) -> nn.ModuleList:
    """``depth`` pre-norm transformer blocks (batch first, GELU, no dropout)."""
    if dim % heads:
        raise ValueError(f"the width {dim} must be divisible by the number of heads {heads}")
    return nn.ModuleList(
        nn.TransformerEncoderLayer(dim, heads, dim_feedforward=int(dim * mlp_ratio), dropout=0.0, activation="gelu",
                                   batch_first=True, norm_first=True)
        for _ in range(depth)
    )


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


class TokenEncoder(nn.Module):
    """A ViT encoder for images ``(B, C, H, W)`` (``spatial_dims=2``) or clips ``(B, C, T, H, W)`` (``3``).

    Args:
        in_channels: input channels.
        spatial_dims: 2 (images) or 3 (clips or volumes, the first axis split into ``tubelet``-long pieces).
        image_size: ``H = W`` or ``(H, W)``; divisible by ``patch``.
        patch: patch side.
        frames: ``T`` of a 3-D input; divisible by ``tubelet``.
        tubelet: tubelet length along ``T`` (3-D only).
        dim: token width. depth: transformer blocks. heads: attention heads (dividing ``dim``).
        mlp_ratio: MLP width / ``dim``. pos_embed: ``sincos`` or ``learned``.

    Attributes:
        grid: tokens per axis, ``(H/patch, W/patch)`` or ``(T/tubelet, H/patch, W/patch)``; ``num_tokens`` their
            product, in row-major order. ``input_shape``: the spatial input shape. ``patch_dim``: pixels per token
            (``C * prod(kernel)``, the size of :meth:`patchify`'s rows).

    Raises:
        ValueError: a bad option, size not divisible by the patch/tubelet, or ``dim`` not divisible by ``heads``.

    Example:
        >>> enc = TokenEncoder(3, spatial_dims=3, image_size=16, patch=8, frames=4, tubelet=2, dim=16, depth=1, heads=2)
        >>> enc.grid, enc(torch.rand(2, 3, 4, 16, 16)).shape
        ((2, 2, 2), torch.Size([2, 8, 16]))
    """

    def __init__(self, in_channels: int = 1, *, spatial_dims: int = 2, image_size: int | Sequence[int] = 32,
                 patch: int = 4, frames: int = 8, tubelet: int = 2, dim: int = 64, depth: int = 4, heads: int = 4,
                 mlp_ratio: float = 4.0, pos_embed: str | PosEmbed = PosEmbed.SINCOS) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        size = (int(image_size),) * 2 if isinstance(image_size, int) else tuple(int(s) for s in image_size)
        if len(size) != 2:
            raise ValueError(f"image_size is H or (H, W), got {image_size}")
        kernel = (patch, patch) if spatial_dims == 2 else (tubelet, patch, patch)
        shape = size if spatial_dims == 2 else (int(frames), *size)
        if min(in_channels, dim, depth, heads, *kernel, *shape) < 1 or any(s % k for s, k in zip(shape, kernel)):
            raise ValueError(f"input {shape} must be a positive multiple of the patch {kernel}; in_channels, dim, "
                             f"depth and heads must be positive (got {in_channels}, {dim}, {depth}, {heads})")
        self.spatial_dims, self.dim, self.kernel, self.input_shape = spatial_dims, dim, kernel, shape
        self.grid = tuple(s // k for s, k in zip(shape, kernel))
        self.num_tokens = math.prod(self.grid)
        self.patch_dim = in_channels * math.prod(kernel)
        conv = nn.Conv2d if spatial_dims == 2 else nn.Conv3d
        self.patch_embed = conv(in_channels, dim, kernel_size=kernel, stride=kernel)
        self.pos_kind = resolve_option(PosEmbed, pos_embed, "pos_embed", "Embeddings")
        table = sincos_pos_embed(dim, self.grid)[None]
        if self.pos_kind == PosEmbed.LEARNED:
            self.pos_embed = nn.Parameter(0.02 * torch.randn_like(table))
        else:
            self.register_buffer("pos_embed", table, persistent=False)
        self.blocks = _blocks(dim, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(dim)
        self.apply(_init_linear)

    def _check(self, x: torch.Tensor) -> None:
        if x.ndim != 2 + self.spatial_dims or tuple(x.shape[2:]) != self.input_shape:
            raise ValueError(f"expected (B, C, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Embedded tokens with positions, before the blocks: ``(B, num_tokens, dim)``."""
        self._check(x)
        return self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """The pixels of each token, ``(B, num_tokens, patch_dim)`` (channels, then the patch's axes).

        Example:
            >>> TokenEncoder(1, image_size=4, patch=2, dim=8, depth=1, heads=2).patchify(
            ...     torch.arange(16.0).view(1, 1, 4, 4))[0, 1].tolist()
            [2.0, 3.0, 6.0, 7.0]
        """
        self._check(x)
        b, c = x.shape[:2]
        split = [v for g, k in zip(self.grid, self.kernel) for v in (g, k)]
        x = x.reshape(b, c, *split)  # (B, C, g0, k0, g1, k1[, g2, k2])
        n = len(self.grid)
        order = [0, *range(2, 2 + 2 * n, 2), 1, *range(3, 3 + 2 * n, 2)]
        return x.permute(order).reshape(b, self.num_tokens, self.patch_dim)

    def forward(self, x: torch.Tensor, visible: torch.Tensor | None = None) -> torch.Tensor:
        """Encode all tokens, or only those at ``visible``.

        Args:
            x: ``(B, C, H, W)`` or ``(B, C, T, H, W)``, of the encoder's ``input_shape``.
            visible: token indices ``(B, N_visible)`` into the row-major grid, or None for all.

        Returns:
            ``(B, num_tokens or N_visible, dim)``, after the final LayerNorm.

        Raises:
            ValueError: an input of another shape.
        """
        tokens = self.tokens(x)
        if visible is not None:
            tokens = gather_tokens(tokens, visible)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


class MaskedPredictor(nn.Module):
    """Predict masked tokens from visible ones: the I-JEPA/V-JEPA predictor and, with pixel outputs, the MAE decoder.

    The visible features are projected to ``width`` and get the positional embedding of their grid positions; one
    learned mask token per masked position gets that position's embedding; ``depth`` transformer blocks run over
    both, and the masked positions are projected to ``out_dim``.

    Args:
        in_dim: width of the visible features. out_dim: width of each prediction.
        grid: the encoder's token grid. width / depth / heads / mlp_ratio: the blocks.

    Example:
        >>> pred = MaskedPredictor(16, 5, (4, 4), width=8, depth=1, heads=2)
        >>> pred(torch.rand(2, 3, 16), torch.tensor([[0, 1, 2]] * 2), torch.tensor([[5, 9]] * 2)).shape
        torch.Size([2, 2, 5])
    """

    def __init__(self, in_dim: int, out_dim: int, grid: Sequence[int], *, width: int = 384, depth: int = 12,
                 heads: int = 12, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        if min(in_dim, out_dim, width, depth, heads) < 1:
            raise ValueError(f"sizes must be positive, got in {in_dim}, out {out_dim}, width {width}, depth {depth}, "
                             f"heads {heads}")
        self.embed = nn.Linear(in_dim, width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, width))
        self.register_buffer("pos_embed", sincos_pos_embed(width, tuple(grid))[None], persistent=False)
        self.blocks = _blocks(width, depth, heads, mlp_ratio)
        self.norm = nn.LayerNorm(width)
        self.proj = nn.Linear(width, out_dim)
        self.apply(_init_linear)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, tokens: torch.Tensor, visible: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        """``tokens`` ``(B, N_visible, in_dim)`` at ``visible`` ``(B, N_visible)`` -> ``(B, N_masked, out_dim)`` at
        ``masked`` ``(B, N_masked)``."""
        pos = self.pos_embed.expand(tokens.shape[0], -1, -1)
        context = self.embed(tokens) + gather_tokens(pos, visible)
        queries = self.mask_token + gather_tokens(pos, masked)
        x = torch.cat([context, queries], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.proj(self.norm(x[:, context.shape[1]:]))


@dataclass(frozen=True)
class TokenMasks:
    """One mask per sample of a batch, as sorted token indices: ``visible`` ``(B, N_visible)`` (the context the
    encoder sees) and ``masked`` ``(B, N_masked)`` (the targets). The counts are the batch's minimum (V-JEPA's
    collator), so a few tokens of some samples are in neither set."""

    visible: torch.Tensor
    masked: torch.Tensor

    def to(self, device: torch.device | str) -> TokenMasks:
        """The masks on ``device``."""
        return TokenMasks(self.visible.to(device), self.masked.to(device))


def _generator(seed: int | torch.Generator) -> torch.Generator:
    return seed if isinstance(seed, torch.Generator) else torch.Generator().manual_seed(int(seed))


def multiblock_mask(batch: int, grid: Sequence[int], *, blocks: int = 8, scale: float = 0.15,
                    aspect_ratio: tuple[float, float] = (0.75, 1.5), temporal_scale: float = 1.0, min_keep: int = 4,
                    seed: int | torch.Generator = 0) -> TokenMasks:
    """V-JEPA multi-block masks for a batch: the union of ``blocks`` boxes per sample is masked.

    As V-JEPA's ``MaskCollator``: one block size per batch (area ``scale`` of the ``H' x W'`` grid, aspect ratio
    ``h / w`` uniform in ``aspect_ratio``, height and width below the grid's, ``temporal_scale`` of ``T'``), a random
    position per sample and block; a sample keeping fewer than ``min_keep`` visible tokens gets random masked tokens
    back. Both index sets are cut to the batch's smallest count (a random subset of each sample's), so they stack.
    Everything is drawn from ``seed`` in a fixed order, without a loop over samples.

    Args:
        batch: samples. grid: tokens per axis, ``(H', W')`` or ``(T', H', W')``.
        blocks: boxes per sample. scale: area of one box / ``H' * W'``.
        aspect_ratio: range of ``h / w``. temporal_scale: box length / ``T'`` (3-D grids).
        min_keep: visible tokens kept at least (at least 1, below the number of tokens).
        seed: an int or a ``torch.Generator`` (CPU).

    Returns:
        :class:`TokenMasks` (int64, CPU).

    Raises:
        ValueError: bad sizes or ranges.

    Example:
        >>> m = multiblock_mask(3, (8, 8), blocks=1, scale=0.25, aspect_ratio=(1.0, 1.0), seed=0)
        >>> m.visible.shape, m.masked.shape
        (torch.Size([3, 48]), torch.Size([3, 16]))
    """
    dims = tuple(int(g) for g in grid)
    if len(dims) not in (2, 3) or min(dims) < 1 or batch < 1 or blocks < 1:
        raise ValueError(f"grid is (H', W') or (T', H', W') of positive sizes, batch and blocks positive; got "
                         f"grid {grid}, batch {batch}, blocks {blocks}")
    if not 0 < scale <= 1 or not 0 < temporal_scale <= 1 or not 0 < aspect_ratio[0] <= aspect_ratio[1]:
        raise ValueError(f"scale and temporal_scale in (0, 1], 0 < aspect_ratio[0] <= aspect_ratio[1]; got {scale}, "
                         f"{temporal_scale}, {aspect_ratio}")
    t_len, height, width = (1, *dims) if len(dims) == 2 else dims
    n = t_len * height * width
    if not 1 <= min_keep < n:
        raise ValueError(f"min_keep must be in [1, {n}) for {n} tokens, got {min_keep}")
    g = _generator(seed)
    ratio = aspect_ratio[0] + float(torch.rand((), generator=g)) * (aspect_ratio[1] - aspect_ratio[0])
    area = max(1.0, scale * height * width)
    h = min(max(1, round(math.sqrt(area * ratio))), max(1, height - 1))
    w = min(max(1, round(math.sqrt(area / ratio))), max(1, width - 1))
    t = min(max(1, round(temporal_scale * t_len)), t_len)
    starts = [torch.randint(0, size - extent + 1, (batch, blocks, 1), generator=g)
              for size, extent in ((t_len, t), (height, h), (width, w))]
    inside = [(torch.arange(size) >= s) & (torch.arange(size) < s + extent)  # (B, K, size)
              for s, size, extent in zip(starts, (t_len, height, width), (t, h, w))]
    box = inside[0][..., :, None, None] & inside[1][..., None, :, None] & inside[2][..., None, None, :]
    masked = box.any(dim=1).flatten(1)  # (B, N)
    noise = torch.rand(batch, n, generator=g)
    need = (min_keep - (~masked).sum(1)).clamp(min=0)
    rank = torch.argsort(torch.argsort(torch.where(masked, noise, 2.0), dim=1), dim=1)  # masked tokens first
    masked &= rank >= need[:, None]
    keep = torch.rand(batch, n, generator=g)

    def pick(member: torch.Tensor) -> torch.Tensor:
        count = int(member.sum(1).min())
        return torch.argsort(torch.where(member, keep, 2.0), dim=1)[:, :count].sort(dim=1).values

    return TokenMasks(visible=pick(~masked), masked=pick(masked))


@dataclass(frozen=True, kw_only=True)
class MultiBlockMasking:
    """Several multi-block mask groups per batch, as V-JEPA (``blocks[i]`` boxes of area ``scales[i]`` each).

    Args:
        blocks: boxes per group (V-JEPA: ``(8, 2)``). scales: box area per group (V-JEPA: ``(0.15, 0.7)``).
        aspect_ratio / temporal_scale / min_keep: as :func:`multiblock_mask`.

    Raises:
        ValueError: groups of different lengths or bad ranges.

    Example:
        >>> masks = MultiBlockMasking()(4, (8, 8), seed=1)
        >>> len(masks), [m.visible.shape[0] for m in masks]
        (2, [4, 4])
    """

    blocks: tuple[int, ...] = (8, 2)
    scales: tuple[float, ...] = (0.15, 0.7)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    temporal_scale: float = 1.0
    min_keep: int = 4

    def __post_init__(self) -> None:
        if not self.blocks or len(self.blocks) != len(self.scales) or len(self.aspect_ratio) != 2:
            raise ValueError(f"blocks {self.blocks} and scales {self.scales} need one entry per mask group, "
                             f"aspect_ratio {self.aspect_ratio} two values")
        if min(self.blocks) < 1 or not all(0 < s <= 1 for s in self.scales) or self.min_keep < 1:
            raise ValueError(f"blocks must be positive, scales in (0, 1], min_keep >= 1; got {self.blocks}, "
                             f"{self.scales}, {self.min_keep}")
        if not 0 < self.aspect_ratio[0] <= self.aspect_ratio[1] or not 0 < self.temporal_scale <= 1:
            raise ValueError(f"need 0 < aspect_ratio[0] <= aspect_ratio[1] and temporal_scale in (0, 1]; got "
                             f"{self.aspect_ratio}, {self.temporal_scale}")

    def __call__(self, batch: int, grid: Sequence[int], seed: int | torch.Generator = 0) -> list[TokenMasks]:
        """One :class:`TokenMasks` per group, drawn in order from ``seed``."""
        g = _generator(seed)
        return [multiblock_mask(batch, grid, blocks=k, scale=s, aspect_ratio=tuple(self.aspect_ratio),
                                temporal_scale=self.temporal_scale, min_keep=self.min_keep, seed=g)
                for k, s in zip(self.blocks, self.scales)]


class TokenMeanPool(nn.Module):
    """Mean over tokens: ``(B, N, D)`` -> ``(B, D)``."""

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.mean(dim=1)


class LinearHead(nn.Module):
    """A linear classifier ``(B, D)`` -> ``(B, num_classes)``, optionally after a BatchNorm without affine
    parameters (MAE's linear-probe head: it standardises the frozen features, and in ``eval()`` it is a fixed affine
    map, so the classifier stays linear). Submodules ``norm`` and ``fc``."""

    def __init__(self, dim: int, num_classes: int, norm: bool = True) -> None:
        super().__init__()
        self.norm: nn.Module = nn.BatchNorm1d(dim, affine=False) if norm else nn.Identity()
        self.fc = nn.Linear(dim, num_classes)
        _init_linear(self.fc)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.norm(features))


class SaltViT(nn.Module):
    """A :class:`TokenEncoder` classifier: encoder (tap ``encoder``, ``(B, N, dim)``), mean over tokens (``pool``,
    ``(B, dim)``) and a :class:`LinearHead` (``head``, ``(B, num_classes)``).

    Args:
        in_channels: input channels. num_classes: output logits.
        head_norm: BatchNorm (no affine) before the linear layer. **encoder: :class:`TokenEncoder` keywords.

    Example:
        >>> SaltViT(1, 3, image_size=8, patch=4, dim=8, depth=1, heads=2)(torch.rand(2, 1, 8, 8)).shape
        torch.Size([2, 3])
    """

    def __init__(self, in_channels: int, num_classes: int, head_norm: bool = True, **encoder: object) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {num_classes}")
        self.encoder = TokenEncoder(in_channels, **encoder)  # type: ignore[arg-type]
        self.pool = TokenMeanPool()
        self.head = LinearHead(self.encoder.dim, num_classes, norm=head_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, num_classes)`` of ``x`` ``(B, C, H, W)`` or ``(B, C, T, H, W)``."""
        return self.head(self.pool(self.encoder(x)))


@register_net("salt_vit", task="classification")
def salt_vit(in_channels: int = 1, num_classes: int = 5, spatial_dims: int = 2, image_size: int | Sequence[int] = 32,
             patch: int = 4, dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0, frames: int = 8,
             tubelet: int = 2, pos_embed: str = "sincos", head_norm: bool = True) -> nn.Module:
    """A small ViT classifier (:class:`SaltViT`): the encoder SALT pretrains, mean pooling, a linear head.

    The defaults (2-D, 32x32, patches 4, width 64, 4 blocks, 4 heads) give 64 tokens and about 0.2 M parameters.

    Args:
        in_channels / num_classes: input channels, logits.
        spatial_dims: 2 for ``(B, C, H, W)``, 3 for clips ``(B, C, frames, H, W)``.
        image_size: ``H = W`` or ``(H, W)``. patch: patch side. frames / tubelet: clip length and tubelet length.
        dim / depth / heads / mlp_ratio: the transformer. pos_embed: ``sincos`` or ``learned``.
        head_norm: a BatchNorm without affine parameters before the linear layer (MAE's linear-probe protocol).

    Returns:
        The :class:`SaltViT`.

    Raises:
        ValueError: see :class:`TokenEncoder`.

    Example:
        >>> salt_vit(3, 2, spatial_dims=3, image_size=8, frames=4, dim=8, depth=1, heads=2)(
        ...     torch.rand(2, 3, 4, 8, 8)).shape
        torch.Size([2, 2])
    """
    return SaltViT(in_channels, num_classes, spatial_dims=spatial_dims, image_size=image_size, patch=patch, dim=dim,
                   depth=depth, heads=heads, mlp_ratio=mlp_ratio, frames=frames, tubelet=tubelet, pos_embed=pos_embed,
                   head_norm=head_norm)


class FrameTokenEncoder(nn.Module):
    """A 2-D :class:`TokenEncoder` on each frame of a clip, mean over its tokens, then a linear projection: a clip
    ``(B, T, C, H, W)`` (uint8 0-255, scaled to 0-1, or float 0-1: the range SALT pretrains on) -> per-frame
    features ``(B, T, feature_dim)``. Submodules ``encoder`` (the :class:`TokenEncoder`, whose state dict is the one
    SALT saves), ``pool`` and ``proj``.

    Args:
        in_channels: frame channels. feature_dim: output width. **encoder: :class:`TokenEncoder` keywords
            (``image_size`` the frame size, ``patch``, ``dim``, ``depth``, ``heads``, ``mlp_ratio``, ``pos_embed``).

    Raises:
        ValueError: see :class:`TokenEncoder`; a ``feature_dim`` below 1.

    Example:
        >>> net = FrameTokenEncoder(3, 16, image_size=8, patch=4, dim=8, depth=1, heads=2)
        >>> net(torch.randint(0, 255, (2, 3, 3, 8, 8), dtype=torch.uint8)).shape
        torch.Size([2, 3, 16])
    """

    def __init__(self, in_channels: int = 3, feature_dim: int = 128, **encoder: object) -> None:
        super().__init__()
        if feature_dim < 1:
            raise ValueError(f"feature_dim must be positive, got {feature_dim}")
        self.encoder = TokenEncoder(in_channels, spatial_dims=2, **encoder)  # type: ignore[arg-type]
        self.pool = TokenMeanPool()
        self.proj = nn.Linear(self.encoder.dim, feature_dim)
        _init_linear(self.proj)
        self.feature_dim = feature_dim

    def forward(self, clip: torch.Tensor) -> torch.Tensor:
        """Per-frame features ``(B, T, feature_dim)`` of ``clip`` ``(B, T, C, H, W)``.

        Raises:
            ValueError: not a 5-D clip, or frames of another size than the encoder's ``image_size``.
        """
        if clip.ndim != 5:
            raise ValueError(f"expected a clip (B, T, C, H, W), got {tuple(clip.shape)}")
        b, t = clip.shape[:2]
        x = clip.reshape(b * t, *clip.shape[2:])
        x = x.float() / 255.0 if not x.is_floating_point() else x
        return self.proj(self.pool(self.encoder(x))).reshape(b, t, -1)


@register_net("salt_frames", task="video_encoder")
def salt_frames(in_channels: int = 3, feature_dim: int = 128, image_size: int | Sequence[int] = 32, patch: int = 4,
                dim: int = 64, depth: int = 4, heads: int = 4, mlp_ratio: float = 4.0,
                pos_embed: str = "sincos") -> nn.Module:
    """A per-frame ViT clip encoder (:class:`FrameTokenEncoder`): ``(B, T, C, H, W)`` -> ``(B, T, feature_dim)``.

    The encoder keywords (and their defaults) are ``salt_vit``'s 2-D ones, so a SALT run's ``net_params`` carry
    over; ``image_size`` is the frame size (SurgFUTR passes ``data.frame_size``).

    Args:
        in_channels: frame channels (3: RGB). feature_dim: per-frame feature width.
        image_size: ``H = W`` or ``(H, W)``. patch: patch side.
        dim / depth / heads / mlp_ratio: the transformer. pos_embed: ``sincos`` or ``learned``.

    Raises:
        ValueError: see :class:`TokenEncoder`.

    Example:
        >>> salt_frames(feature_dim=8, image_size=8, dim=8, depth=1, heads=2)(torch.rand(1, 2, 3, 8, 8)).shape
        torch.Size([1, 2, 8])
    """
    return FrameTokenEncoder(in_channels, feature_dim, image_size=image_size, patch=patch, dim=dim, depth=depth,
                             heads=heads, mlp_ratio=mlp_ratio, pos_embed=pos_embed)
