# SPDX-License-Identifier: Apache-2.0
"""The token encoder, V-JEPA multi-block masks, the masked predictor and the ``salt_vit`` classifier (2-D images,
3-D clips): shapes, visible-only encoding, mask properties and determinism, bad input."""

from __future__ import annotations

import pytest
import torch

from medkd.distill.hooks import FeatureTap
from medkd.nets import create_net, net_task
from medkd.nets.contracts import check_classification_net, check_registered_net
from medkd.nets.token_vit import (
    MaskedPredictor,
    MultiBlockMasking,
    TokenEncoder,
    multiblock_mask,
    sincos_pos_embed,
)

SMALL = {"dim": 16, "depth": 2, "heads": 2}


@pytest.mark.parametrize(
    ("kwargs", "shape", "grid"),
    [
        ({"image_size": 16, "patch": 4}, (2, 1, 16, 16), (4, 4)),
        ({"image_size": (16, 8), "patch": 4}, (2, 1, 16, 8), (4, 2)),
        ({"spatial_dims": 3, "image_size": 8, "patch": 4, "frames": 4, "tubelet": 2}, (2, 1, 4, 8, 8), (2, 2, 2)),
    ],
)
def test_salt_vit_images_and_clips(kwargs: dict, shape: tuple, grid: tuple) -> None:
    torch.manual_seed(0)
    net = create_net("salt_vit", in_channels=1, num_classes=3, **SMALL, **kwargs).train()
    assert net_task("salt_vit") == "classification" and net.encoder.grid == grid
    x = torch.randn(*shape)
    check_classification_net(net, x, num_classes=3)
    with FeatureTap(net, ["encoder", "pool", "head"]) as tap:
        net(x)
        feats = tap.pop()
    n = torch.tensor(grid).prod().item()
    assert feats["feat:encoder"].shape == (2, n, 16)
    assert feats["feat:pool"].shape == (2, 16) and feats["feat:head"].shape == (2, 3)


def test_registry_sweep_and_learned_positions() -> None:
    check_registered_net("salt_vit")  # the registry sweep's 2-D contract with the defaults
    enc = TokenEncoder(1, image_size=8, patch=4, pos_embed="learned", **SMALL)
    assert any(name == "pos_embed" for name, _ in enc.named_parameters())
    assert "pos_embed" not in dict(TokenEncoder(1, image_size=8, patch=4, **SMALL).named_parameters())


def test_patchify_inverts_the_grid_order_of_a_clip() -> None:
    enc = TokenEncoder(2, spatial_dims=3, image_size=4, patch=2, frames=4, tubelet=2, **SMALL)
    x = torch.randn(1, 2, 4, 4, 4)
    patches = enc.patchify(x)  # (1, 8, 2*2*2*2)
    assert patches.shape == (1, 8, 16)
    # token 5 = grid (1, 0, 1): frames 2-3, rows 0-1, columns 2-3
    torch.testing.assert_close(patches[0, 5], x[0, :, 2:4, 0:2, 2:4].reshape(-1))


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_masked_patches_never_reach_the_visible_tokens(spatial_dims: int) -> None:
    torch.manual_seed(0)
    kw = {"frames": 4, "tubelet": 2} if spatial_dims == 3 else {}
    enc = TokenEncoder(1, spatial_dims=spatial_dims, image_size=8, patch=2, **SMALL, **kw).eval()
    shape = (2, 1, 4, 8, 8) if spatial_dims == 3 else (2, 1, 8, 8)
    x = torch.randn(*shape)
    masks = multiblock_mask(2, enc.grid, blocks=3, scale=0.2, seed=3)
    y = x.clone()
    hidden = torch.ones(2, enc.num_tokens, enc.patch_dim)
    hidden.scatter_(1, masks.visible[..., None].expand(-1, -1, enc.patch_dim), 0.0)  # 1 on non-visible tokens
    y = y + 100.0 * _unpatchify(enc, hidden, y.shape)
    assert not torch.allclose(enc(x), enc(y))  # the change is real...
    torch.testing.assert_close(enc(x, masks.visible), enc(y, masks.visible))  # ...but only on unseen tokens


def _unpatchify(enc: TokenEncoder, patches: torch.Tensor, shape: tuple) -> torch.Tensor:
    """The image whose patchify is ``patches`` (patchify is a permutation of the pixels)."""
    index = torch.arange(torch.Size(shape).numel(), dtype=torch.float32).view(shape)
    order = enc.patchify(index).long().flatten()
    out = torch.empty(torch.Size(shape).numel())
    out[order] = patches.flatten()
    return out.view(shape)


def test_mask_fraction_and_structure() -> None:
    m = multiblock_mask(6, (16, 16), blocks=1, scale=0.25, aspect_ratio=(1.0, 1.0), seed=0)
    assert m.masked.shape == (6, 64) and m.visible.shape == (6, 192)  # one 8x8 block: a quarter of the grid
    both = torch.cat([m.visible, m.masked], 1)
    assert bool((both.sort(1).values == torch.arange(256)).all())  # disjoint, together every token
    assert bool((m.visible.diff(1) > 0).all()) and bool((m.masked.diff(1) > 0).all())  # sorted, unique
    # V-JEPA defaults: 8 blocks at 0.15 mask more than one block's area, 2 at 0.7 even more; each row disjoint
    short, long = MultiBlockMasking()(16, (8, 8), seed=4)
    frac_short = short.masked.shape[1] / 64
    assert 0.15 < frac_short < 1.0 and long.masked.shape[1] / 64 > frac_short
    for m in (short, long):
        for vis, msk in zip(m.visible.tolist(), m.masked.tolist()):
            assert not set(vis) & set(msk) and len(vis) >= 4


def test_mask_min_keep_and_full_temporal_blocks() -> None:
    m = multiblock_mask(32, (4, 4), blocks=8, scale=0.7, min_keep=5, seed=1)
    assert m.visible.shape[1] >= 5 and m.masked.shape[1] >= 1
    m = multiblock_mask(4, (3, 4, 4), blocks=1, scale=0.25, aspect_ratio=(1.0, 1.0), seed=2)
    masked = torch.zeros(4, 48, dtype=torch.bool).scatter_(1, m.masked, True).view(4, 3, 4, 4)
    assert bool((masked == masked[:, :1]).all())  # temporal_scale 1: the same box in every time step
    assert m.masked.shape[1] == 3 * 4


def test_mask_determinism() -> None:
    a, b = MultiBlockMasking()(8, (8, 8), seed=7), MultiBlockMasking()(8, (8, 8), seed=7)
    c = MultiBlockMasking()(8, (8, 8), seed=8)
    assert all(torch.equal(x.visible, y.visible) and torch.equal(x.masked, y.masked) for x, y in zip(a, b))
    assert not all(torch.equal(x.masked, y.masked) for x, y in zip(a, c))


def test_masked_predictor_outputs_only_masked_positions() -> None:
    torch.manual_seed(0)
    pred = MaskedPredictor(16, 7, (4, 4), width=8, depth=1, heads=2)
    masks = multiblock_mask(2, (4, 4), blocks=2, scale=0.2, seed=0)
    out = pred(torch.randn(2, masks.visible.shape[1], 16), masks.visible, masks.masked)
    assert out.shape == (2, masks.masked.shape[1], 7)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: TokenEncoder(1, image_size=10, patch=4), "multiple of the patch"),
        (lambda: TokenEncoder(1, dim=10, heads=4), "divisible"),
        (lambda: TokenEncoder(1, spatial_dims=4), "spatial_dims"),
        (lambda: TokenEncoder(1, pos_embed="sincoss"), "Did you mean 'sincos'"),
        (lambda: TokenEncoder(1, image_size=8, patch=4, **SMALL)(torch.rand(1, 1, 16, 16)), "expected"),
        (lambda: multiblock_mask(2, (4, 4), min_keep=16), "min_keep"),
        (lambda: multiblock_mask(2, (4, 4), scale=1.5), "scale"),
        (lambda: MultiBlockMasking(blocks=(8,), scales=(0.1, 0.2)), "one entry per mask group"),
        (lambda: sincos_pos_embed(3, (2, 2)), "at least 4"),
    ],
)
def test_bad_input(call, match: str) -> None:  # noqa: ANN001
    with pytest.raises(ValueError, match=match):
        call()


def test_head_norm_is_optional_and_linear_in_eval() -> None:
    torch.manual_seed(0)
    plain = create_net("salt_vit", in_channels=1, num_classes=3, head_norm=False, image_size=8, **SMALL)
    assert isinstance(plain.head.norm, torch.nn.Identity)
    net = create_net("salt_vit", in_channels=1, num_classes=3, image_size=8, **SMALL).eval()
    f = torch.randn(4, 16)
    # eval: the head is an affine map of the pooled features (a linear probe)
    zero = net.head(torch.zeros(2, 16))
    torch.testing.assert_close(net.head(f[:2] + f[2:]) + zero, net.head(f[:2]) + net.head(f[2:]))
