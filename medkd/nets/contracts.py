# SPDX-License-Identifier: Apache-2.0
"""What a network of each :class:`~medkd.nets.factory.NetTask` takes and returns, as checks anyone can run.

The registry sweep test runs :func:`check_registered_net` on every registered network; a method package calls the
same functions on its own networks. Each check raises :class:`NetContractError` naming what is wrong.

- **segmentation**: factory keywords ``in_channels``, ``out_channels``; ``(B, C_in, *spatial)`` -> logits
  ``(B, C_out, *spatial)``.
- **classification**: factory keywords ``in_channels``, ``num_classes``; ``(B, C_in, *spatial)`` -> logits
  ``(B, num_classes)``.
- **detection** (torchvision / MONAI ``RetinaNetDetector`` style): factory keywords ``in_channels``,
  ``num_classes``. In ``train()`` mode ``net(images, targets)`` with a list of ``(C_in, *spatial)`` images and one
  dict per image (``boxes`` ``(N, 2 * dims)`` as ``(x1, y1[, z1], x2, y2[, z2])``, ``labels`` ``(N,)`` int64)
  returns a dict of scalar losses; in ``eval()`` mode ``net(images)`` returns one dict per image with ``boxes``
  ``(K, 2 * dims)``, ``scores`` ``(K,)`` and ``labels`` ``(K,)``. The key names are arguments; the sweep reads a
  MONAI ``RetinaNetDetector``'s own (``target_box_key``, ``target_label_key``, ``pred_score_key``, e.g.
  ``boxes``/``labels``/``labels_scores``), see :func:`detection_keys`.
- **video_encoder**: factory keyword ``in_channels``; a clip ``(B, T, C_in, H, W)`` (time before channels, as
  SurgFUTR's clip encoder) -> one feature vector per clip ``(B, D)`` or per frame ``(B, T, D)``.

Example:
    >>> from medkd.nets import create_net
    >>> net = create_net("bcp_unet2d_half", in_channels=1, out_channels=2)
    >>> tuple(check_segmentation_net(net, torch.randn(1, 1, 32, 32), out_channels=2).shape)
    (1, 2, 32, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from medkd.keys import Keys
from medkd.nets.factory import NetTask, create_net, net_task

__all__ = [
    "NET_CONTRACTS",
    "NetContractError",
    "check_classification_net",
    "check_detection_net",
    "check_registered_net",
    "check_segmentation_net",
    "check_video_encoder",
    "detection_keys",
    "spatial_dims",
    "synthetic_detection_batch",
]


class NetContractError(AssertionError):
    """A network does not honour its task's contract (an ``AssertionError``, so pytest reports it as a failure)."""


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise NetContractError(message)


def _check_backward(net: nn.Module, loss: torch.Tensor) -> None:
    """Backpropagate ``loss``: every trainable parameter reached gets a finite gradient and some are non-zero."""
    net.zero_grad(set_to_none=True)
    loss.backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad and p.grad is not None]
    _require(bool(grads), f"{type(net).__name__}: no parameter received a gradient")
    _require(all(bool(torch.isfinite(g).all()) for g in grads), f"{type(net).__name__}: non-finite gradients")
    _require(any(bool(g.abs().sum() > 0) for g in grads), f"{type(net).__name__}: all gradients are zero")


def _tensor_out(net: nn.Module, out: Any) -> torch.Tensor:
    _require(isinstance(out, torch.Tensor), f"{type(net).__name__} returned {type(out).__name__}, not a tensor")
    _require(bool(torch.isfinite(out).all()), f"{type(net).__name__}: non-finite output")
    return out


def check_segmentation_net(
    net: nn.Module, x: torch.Tensor, *, out_channels: int, backward: bool = True
) -> torch.Tensor:
    """Check the segmentation contract: ``(B, C_in, *spatial)`` -> logits ``(B, out_channels, *spatial)``.

    Args:
        net: the network, in the mode to test (``train()`` for the backward check).
        x: an input ``(B, C_in, *spatial)`` the network accepts.
        out_channels: the ``out_channels`` it was built with.
        backward: also backpropagate the mean squared output.

    Returns:
        The output.

    Raises:
        NetContractError: wrong type, shape, non-finite values or gradients.
    """
    out = _tensor_out(net, net(x))
    expected = (x.shape[0], out_channels, *x.shape[2:])
    _require(tuple(out.shape) == expected, f"{type(net).__name__}: output {tuple(out.shape)}, expected {expected}")
    if backward:
        _check_backward(net, out.square().mean())
    return out


def check_classification_net(
    net: nn.Module, x: torch.Tensor, *, num_classes: int, backward: bool = True
) -> torch.Tensor:
    """Check the classification contract: ``(B, C_in, *spatial)`` -> logits ``(B, num_classes)``.

    Raises:
        NetContractError: wrong type, shape, non-finite values or gradients.
    """
    out = _tensor_out(net, net(x))
    expected = (x.shape[0], num_classes)
    _require(tuple(out.shape) == expected, f"{type(net).__name__}: output {tuple(out.shape)}, expected {expected}")
    if backward:
        _check_backward(net, out.square().mean())
    return out


def check_video_encoder(
    net: nn.Module, clip: torch.Tensor, *, per_frame: bool | None = None, backward: bool = True
) -> torch.Tensor:
    """Check the video-encoder contract: a clip ``(B, T, C, H, W)`` -> ``(B, D)`` or per frame ``(B, T, D)``.

    Args:
        net: the encoder.
        clip: ``(B, T, C, H, W)``, time before channels.
        per_frame: ``True`` requires ``(B, T, D)``, ``False`` requires ``(B, D)``, ``None`` accepts either.
        backward: also backpropagate the mean squared output.

    Raises:
        NetContractError: wrong type, shape, non-finite values or gradients.
    """
    _require(clip.ndim == 5, f"a clip is (B, T, C, H, W); got {tuple(clip.shape)}")
    out = _tensor_out(net, net(clip))
    b, t = clip.shape[:2]
    clip_level = out.ndim == 2 and out.shape[0] == b
    frame_level = out.ndim == 3 and tuple(out.shape[:2]) == (b, t)
    allowed = {None: clip_level or frame_level, True: frame_level, False: clip_level}[per_frame]
    wanted = {None: f"({b}, D) or ({b}, {t}, D)", True: f"({b}, {t}, D)", False: f"({b}, D)"}[per_frame]
    _require(allowed and out.shape[-1] > 0, f"{type(net).__name__}: output {tuple(out.shape)}, expected {wanted}")
    if backward:
        _check_backward(net, out.square().mean())
    return out


def check_detection_net(
    net: nn.Module,
    images: Sequence[torch.Tensor],
    targets: Sequence[Mapping[str, torch.Tensor]],
    *,
    box_key: str = Keys.BOXES,
    label_key: str = Keys.LABELS,
    score_key: str = Keys.SCORES,
    num_classes: int | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Check the detection contract (torchvision / MONAI style); leaves the network in ``eval()`` mode.

    Args:
        net: the detector.
        images: ``(C, *spatial)`` tensors, 2D or 3D.
        targets: one dict per image with ``box_key`` ``(N, 2 * dims)`` and ``label_key`` ``(N,)`` int64.
        box_key, label_key, score_key: the key names the detector uses.
        num_classes: if given, predicted labels must lie in ``[0, num_classes)``.

    Returns:
        The training losses and the eval detections.

    Raises:
        NetContractError: a loss that is not a finite scalar, no gradient, a missing key, or a wrong shape.
    """
    _require(len(images) == len(targets) > 0, "one target dict per image, at least one image")
    dims = images[0].ndim - 1
    name = type(net).__name__
    net.train()
    losses = net(list(images), [dict(t) for t in targets])
    _require(isinstance(losses, Mapping) and len(losses) > 0, f"{name}: training forward returned no loss dict")
    for key, loss in losses.items():
        _require(
            isinstance(loss, torch.Tensor) and loss.ndim == 0 and bool(torch.isfinite(loss)),
            f"{name}: loss {key!r} is not a finite scalar tensor",
        )
    _check_backward(net, sum(losses.values()))  # type: ignore[arg-type]
    net.eval()
    with torch.no_grad():
        detections = net(list(images))
    _require(
        isinstance(detections, Sequence) and len(detections) == len(images),
        f"{name}: eval forward must return one dict per image",
    )
    for i, det in enumerate(detections):
        missing = [k for k in (box_key, score_key, label_key) if k not in det]
        _require(not missing, f"{name}: detections of image {i} lack {missing}")
        boxes, scores, labels = det[box_key], det[score_key], det[label_key]
        k = boxes.shape[0] if boxes.ndim else -1
        _require(
            boxes.ndim == 2 and boxes.shape[1] == 2 * dims, f"{name}: boxes {tuple(boxes.shape)}, not (K, {2 * dims})"
        )
        _require(tuple(scores.shape) == (k,) and tuple(labels.shape) == (k,), f"{name}: scores/labels are not ({k},)")
        _require(bool(torch.isfinite(boxes).all()), f"{name}: non-finite boxes")
        _require(not labels.is_floating_point(), f"{name}: labels are {labels.dtype}, not integers")
        if num_classes is not None and k:
            _require(bool(((labels >= 0) & (labels < num_classes)).all()), f"{name}: labels outside [0, {num_classes})")
    return dict(losses), [dict(d) for d in detections]


def detection_keys(net: nn.Module) -> tuple[str, str, str]:
    """The detector's ``(box, label, score)`` keys: MONAI's ``target_box_key``, ``target_label_key`` and
    ``pred_score_key`` attributes when it has them, else ``boxes``, ``labels``, ``scores``."""
    return (
        str(getattr(net, "target_box_key", Keys.BOXES)),
        str(getattr(net, "target_label_key", Keys.LABELS)),
        str(getattr(net, "pred_score_key", Keys.SCORES)),
    )


def spatial_dims(net: nn.Module, default: int = 2) -> int:
    """2 or 3, from the network's first convolution (``default`` when it has none)."""
    for module in net.modules():
        if isinstance(module, (nn.Conv2d, nn.Conv3d)):
            return 2 if isinstance(module, nn.Conv2d) else 3
    return default


def synthetic_detection_batch(
    n_images: int = 2,
    *,
    in_channels: int = 1,
    size: Sequence[int] = (64, 64),
    num_classes: int = 2,
    seed: int = 0,
    box_key: str = Keys.BOXES,
    label_key: str = Keys.LABELS,
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Random images with one or two random boxes each, for the detection contract.

    Returns:
        ``images`` (``(in_channels, *size)`` tensors) and targets (``box_key`` ``(N, 2 * dims)`` corner boxes,
        ``label_key`` ``(N,)`` int64).

    Example:
        >>> images, targets = synthetic_detection_batch(2, size=(32, 32))
        >>> tuple(images[1].shape), tuple(targets[1]["boxes"].shape)
        ((1, 32, 32), (2, 4))
    """
    gen = torch.Generator().manual_seed(seed)
    dims, extent = len(size), torch.tensor(size, dtype=torch.float32)
    images, targets = [], []
    for i in range(n_images):
        n = 1 + i % 2
        lo = torch.rand(n, dims, generator=gen) * extent / 2
        hi = lo + 4 + torch.rand(n, dims, generator=gen) * extent / 3
        images.append(torch.randn(in_channels, *size, generator=gen))
        targets.append(
            {
                str(box_key): torch.cat([lo, torch.minimum(hi, extent)], dim=1),
                str(label_key): torch.randint(0, num_classes, (n,), generator=gen),
            }
        )
    return images, targets


def _sweep_segmentation(name: str, in_channels: int = 2, out_channels: int = 3, **kwargs: Any) -> Any:
    net = create_net(name, in_channels=in_channels, out_channels=out_channels, **kwargs).train()
    x = torch.randn(2, in_channels, 32, 32) if spatial_dims(net) == 2 else torch.randn(1, in_channels, 32, 32, 16)
    return check_segmentation_net(net, x, out_channels=out_channels)


def _sweep_classification(name: str, in_channels: int = 2, num_classes: int = 3, **kwargs: Any) -> Any:
    net = create_net(name, in_channels=in_channels, num_classes=num_classes, **kwargs).train()
    x = torch.randn(2, in_channels, 32, 32) if spatial_dims(net) == 2 else torch.randn(2, in_channels, 16, 16, 16)
    return check_classification_net(net, x, num_classes=num_classes)


def _sweep_detection(name: str, in_channels: int = 1, num_classes: int = 2, **kwargs: Any) -> Any:
    net = create_net(name, in_channels=in_channels, num_classes=num_classes, **kwargs)
    size = (64, 64) if spatial_dims(net) == 2 else (32, 32, 32)
    keys = detection_keys(net)
    images, targets = synthetic_detection_batch(
        2, in_channels=in_channels, size=size, num_classes=num_classes, box_key=keys[0], label_key=keys[1]
    )
    return check_detection_net(
        net, images, targets, box_key=keys[0], label_key=keys[1], score_key=keys[2], num_classes=num_classes
    )


def _sweep_video_encoder(name: str, in_channels: int = 3, **kwargs: Any) -> Any:
    net = create_net(name, in_channels=in_channels, **kwargs).train()
    return check_video_encoder(net, torch.randn(2, 4, in_channels, 32, 32))


NET_CONTRACTS: dict[NetTask, Callable[..., Any]] = {
    NetTask.SEGMENTATION: _sweep_segmentation,
    NetTask.CLASSIFICATION: _sweep_classification,
    NetTask.DETECTION: _sweep_detection,
    NetTask.VIDEO_ENCODER: _sweep_video_encoder,
}
"""Task -> ``check(name, **factory_kwargs)``: builds a registered network with small defaults and checks it."""


def check_registered_net(name: str, **kwargs: Any) -> Any:
    """Build the registered network ``name`` on small synthetic inputs and check its task's contract.

    Args:
        name: registry name.
        **kwargs: factory keywords overriding the sweep's defaults (``in_channels``, ``out_channels``, ...).

    Returns:
        What the task's check returns (the output; for detection the losses and detections).

    Raises:
        KeyError: unknown name.
        NetContractError: the network breaks its task's contract.
    """
    return NET_CONTRACTS[net_task(name)](name, **kwargs)
