# SPDX-License-Identifier: Apache-2.0
"""Building segment-anything models and loading a user's checkpoint into them (nothing is downloaded).

Named architectures (``vit_b``, ``vit_l``, ``vit_h``, ``default``) come from ``segment_anything.sam_model_registry``,
built without a checkpoint; any other size is described by :class:`SamDims` and built from
``segment_anything.modeling`` classes. ``SAM_DIMS["tiny"]`` is the ~63 k-parameter random SAM of the tests
(spec section 7). Checkpoints are read with ``torch.load(weights_only=True)`` and must fit the model exactly.

Example:
    >>> sam = build_sam("tiny")
    >>> sam.image_encoder.img_size, sum(p.numel() for p in sam.parameters()) < 100_000
    (64, True)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from functools import partial
from os import PathLike
from pathlib import Path
from typing import Any

import torch
from monai.utils import optional_import

from medkd.errors import DataError

__all__ = ["SamDims", "SAM_DIMS", "build_sam", "load_sam"]

logger = logging.getLogger(__name__)

_SAM_HINT = 'segment-anything is needed for the SAM expert: pip install "medkd[sam]"'
sam_model_registry, _has_sam = optional_import("segment_anything", name="sam_model_registry")
_modeling, _ = optional_import("segment_anything.modeling")


@dataclass(frozen=True, kw_only=True)
class SamDims:
    """The dimensions of a SAM model (defaults: SAM ViT-B).

    Constraints (checked by :func:`build_sam`): ``img_size`` divisible by ``patch_size``; ``prompt_dim`` (encoder
    output = prompt = decoder dimension) divisible by 8 and ``prompt_dim / 2`` by ``decoder_heads``.
    """

    img_size: int = 1024
    patch_size: int = 16
    encoder_dim: int = 768
    encoder_depth: int = 12
    encoder_heads: int = 12
    window_size: int = 14
    global_attn_indexes: tuple[int, ...] = (2, 5, 8, 11)
    prompt_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256


SAM_DIMS: dict[str, SamDims] = {
    "tiny": SamDims(
        img_size=64,
        patch_size=8,
        encoder_dim=32,
        encoder_depth=2,
        encoder_heads=2,
        window_size=4,
        global_attn_indexes=(1,),
        prompt_dim=32,
        mask_in_chans=4,
        decoder_depth=1,
        decoder_mlp_dim=64,
        decoder_heads=2,
        iou_head_depth=3,
        iou_head_hidden_dim=32,
    ),
}

_NAMED = ("vit_b", "vit_l", "vit_h", "default")
# encoder width of the named checkpoints, to say which one a file looks like
_WIDTH_TO_ARCH = {768: "vit_b", 1024: "vit_l", 1280: "vit_h"}


def _require_sam() -> None:
    if not _has_sam:
        raise ImportError(_SAM_HINT)


def _check_dims(d: SamDims) -> None:
    problems = []
    if d.img_size % d.patch_size:
        problems.append(f"img_size {d.img_size} is not divisible by patch_size {d.patch_size}")
    if d.prompt_dim % 8:
        problems.append(f"prompt_dim {d.prompt_dim} is not divisible by 8")
    if (d.prompt_dim // 2) % d.decoder_heads:
        problems.append(f"prompt_dim / 2 = {d.prompt_dim // 2} is not divisible by decoder_heads {d.decoder_heads}")
    if d.encoder_dim % d.encoder_heads:
        problems.append(f"encoder_dim {d.encoder_dim} is not divisible by encoder_heads {d.encoder_heads}")
    if problems:
        raise ValueError("invalid SAM dimensions: " + "; ".join(problems))


def _build_from_dims(d: SamDims) -> torch.nn.Module:
    _check_dims(d)
    m = _modeling
    grid = d.img_size // d.patch_size
    sam = m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=d.encoder_depth,
            embed_dim=d.encoder_dim,
            img_size=d.img_size,
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=d.encoder_heads,
            patch_size=d.patch_size,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(d.global_attn_indexes),
            window_size=d.window_size,
            out_chans=d.prompt_dim,
        ),
        prompt_encoder=m.PromptEncoder(
            embed_dim=d.prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(d.img_size, d.img_size),
            mask_in_chans=d.mask_in_chans,
        ),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(
                depth=d.decoder_depth, embedding_dim=d.prompt_dim, mlp_dim=d.decoder_mlp_dim, num_heads=d.decoder_heads
            ),
            transformer_dim=d.prompt_dim,
            iou_head_depth=d.iou_head_depth,
            iou_head_hidden_dim=d.iou_head_hidden_dim,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_sam(arch: str | SamDims | dict[str, Any] = "vit_b") -> torch.nn.Module:
    """A randomly initialised SAM in eval mode.

    Args:
        arch: ``vit_b`` / ``vit_l`` / ``vit_h`` / ``default`` (segment-anything's registry, built without a
            checkpoint), a key of :data:`SAM_DIMS` (``tiny``), a :class:`SamDims`, or a dict of its fields.

    Raises:
        ValueError: unknown name or inconsistent dimensions.
        ImportError: segment-anything is not installed.
    """
    _require_sam()
    if isinstance(arch, dict):
        arch = SamDims(**{k: tuple(v) if k == "global_attn_indexes" else v for k, v in arch.items()})
    if isinstance(arch, SamDims):
        return _build_from_dims(arch)
    if arch in SAM_DIMS:
        return _build_from_dims(SAM_DIMS[arch])
    if arch in _NAMED:
        return sam_model_registry[arch](checkpoint=None).eval()
    raise ValueError(f"unknown SAM architecture {arch!r}; options: {', '.join((*_NAMED, *SAM_DIMS))} or SamDims")


def _arch_name(arch: str | SamDims | dict[str, Any]) -> str:
    if isinstance(arch, str):
        return arch
    dims = arch if isinstance(arch, SamDims) else SamDims(**arch)
    return "custom SAM " + ", ".join(f"{k}={v}" for k, v in asdict(dims).items() if k in ("img_size", "encoder_dim"))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DataError(path, "SAM checkpoint not found")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors all mean "not a usable checkpoint"
        raise DataError(path, f"not a readable SAM checkpoint ({type(err).__name__})") from None
    if isinstance(state, dict):
        for key in ("model", "state_dict"):
            inner = state.get(key)
            if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
                state = inner
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise DataError(path, "not a SAM checkpoint: expected a state dict of tensors")
    return state


def load_sam(
    checkpoint: str | PathLike[str], arch: str | SamDims | dict[str, Any] = "vit_b", *, device: str = "cpu"
) -> torch.nn.Module:
    """Build ``arch`` without weights and load the user's checkpoint into it.

    Raises:
        DataError: naming the file: missing, unreadable, not a state dict, or of another size or architecture (the
            first missing / unexpected key or the first key whose shape differs, and the architecture the file
            looks like when it is a known one).
    """
    path = Path(checkpoint)
    state = _read_state_dict(path)
    sam = build_sam(arch)
    expected = sam.state_dict()
    name = _arch_name(arch)
    width = state.get("image_encoder.patch_embed.proj.weight")
    looks = _WIDTH_TO_ARCH.get(int(width.shape[0])) if width is not None and width.ndim == 4 else None
    hint = f" (the file looks like {looks})" if looks and looks != name else ""
    for key, value in state.items():
        if key in expected and tuple(expected[key].shape) != tuple(value.shape):
            raise DataError(
                path,
                f"checkpoint does not fit SAM {name}: {key} has shape {tuple(value.shape)} in the file and "
                f"{tuple(expected[key].shape)} in the model{hint}",
            )
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        first = f"missing key {missing[0]}" if missing else f"unexpected key {unexpected[0]}"
        counts = f"{len(missing)} missing, {len(unexpected)} unexpected"
        raise DataError(path, f"checkpoint does not fit SAM {name}: {first} ({counts}){hint}")
    sam.load_state_dict(state, strict=True)
    logger.info("loaded SAM %s from %s", name, path)
    return sam.to(device).eval()
