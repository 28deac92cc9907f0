# SPDX-License-Identifier: Apache-2.0
"""One inference interface for every deployment path: ``medkd bcp predict``, bundles, DICOM pipelines, the app.

A :class:`Predictor` wraps a loaded model: ``predictor(array)`` takes a float32 volume ``(z, y, x)`` as read
from disk (SimpleITK order; a DICOM series is ``(slices, rows, cols)``) and returns the model's output, for
``kind == "segmentation"`` a uint8 label map of the same shape. Detection (``"detection"``: a dict of boxes,
labels, scores) and video (``"video"``) predictors will plug in with their own ``kind``; the batch runner picks
its writers by kind.

:class:`SegmentationSpec` is the exact inference recipe of a segmentation model (normalisation, slice-by-slice
or sliding window, axes). ``medkd bcp predict``, the bundle's inferer and the pipeline all call
:meth:`SegmentationSpec.segment`, so their masks are identical.

Predictors are loaded from a medkd run folder or a MONAI bundle folder with :func:`load_predictor`; sources
are a registry (:data:`PREDICTOR_SOURCES`), so new model folders need no change here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from medkd.errors import DataError
from medkd.io.labels import LabelInfo
from medkd.registry import Registry

__all__ = [
    "SegmentationSpec", "Predictor", "PredictorSource", "PREDICTOR_SOURCES", "load_predictor", "resolve_device",
    "file_sha256",
]


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto``/``None`` -> CUDA, then MPS, then CPU; anything else as given (``cpu``, ``cuda:1``)."""
    if device is None or str(device) == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return torch.device(device)


def file_sha256(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file (weights fingerprints for reports and SEG UIDs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SegmentationSpec:
    """How a segmentation network turns a volume ``(z, y, x)`` into a label map.

    Attributes:
        mode: ``slices_2d`` (each z slice nearest-resized to ``patch``, softmax, argmax, resized back) or
            ``sliding_3d`` (sliding window of ``patch`` with ``stride``).
        num_classes: output channels, background included.
        patch: network input size.
        intensity: ``minmax`` or ``zscore`` per-volume normalisation.
        axes: how the network sees the ``(z, y, x)`` array: ``zyx`` as read, or ``xyz`` (the LA h5 layout).
        batch_size: slices per forward pass (``slices_2d``).
        stride: sliding-window stride (``sliding_3d``).
        keep_largest: ``sliding_3d`` keeps the largest 3D component per class (the LA protocol).
    """

    mode: Literal["slices_2d", "sliding_3d"]
    num_classes: int
    patch: tuple[int, ...]
    intensity: str = "minmax"
    axes: Literal["zyx", "xyz"] = "zyx"
    batch_size: int = 16
    stride: tuple[int, ...] | None = None
    keep_largest: bool = True

    def __post_init__(self) -> None:
        if self.mode not in ("slices_2d", "sliding_3d"):
            raise ValueError(f"mode must be 'slices_2d' or 'sliding_3d', got {self.mode!r}")
        if self.axes not in ("zyx", "xyz"):
            raise ValueError(f"axes must be 'zyx' or 'xyz', got {self.axes!r}")
        object.__setattr__(self, "patch", tuple(int(p) for p in self.patch))
        if self.stride is not None:
            object.__setattr__(self, "stride", tuple(int(s) for s in self.stride))

    @property
    def spatial_dims(self) -> int:
        """2 for ``slices_2d``, 3 for ``sliding_3d``."""
        return 2 if self.mode == "slices_2d" else 3

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (lists for tuples), the inferer's arguments in a bundle."""
        out = asdict(self)
        out["patch"] = list(self.patch)
        out["stride"] = list(self.stride) if self.stride is not None else None
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "SegmentationSpec":
        """Inverse of :meth:`to_dict`; unknown keys raise ``TypeError`` naming them."""
        return cls(**data)

    def segment(self, model: nn.Module, array: np.ndarray) -> np.ndarray:
        """uint8 label map ``(z, y, x)`` of a volume ``(z, y, x)`` (a 2D image ``(y, x)`` is one slice)."""
        from medkd.data.transforms import normalise_intensity
        from medkd.metrics.seg_inference import predict_sliding_3d, predict_slices_2d

        array = np.asarray(array)
        if array.ndim == 2:
            array = array[None]
        if array.ndim != 3:
            raise ValueError(f"expected a 2D image or a 3D volume, got shape {array.shape}")
        image = normalise_intensity(array, self.intensity)
        if self.axes == "xyz":
            image = image.transpose(2, 1, 0)
        device = next(model.parameters()).device
        model.eval()
        with torch.inference_mode():
            if self.mode == "slices_2d":
                labels = predict_slices_2d(
                    model, image, patch=self.patch, num_classes=self.num_classes, batch_size=self.batch_size,
                    device=device,
                )
            else:
                labels, _ = predict_sliding_3d(
                    model, image, patch=self.patch, stride=self.stride or tuple(max(1, p // 2) for p in self.patch),
                    num_classes=self.num_classes, device=device, keep_largest=self.keep_largest,
                )
        labels = np.asarray(labels).astype(np.uint8, copy=False)
        return labels.transpose(2, 1, 0) if self.axes == "xyz" else labels


@dataclass
class Predictor:
    """A loaded model ready for inference; call it with a float32 volume ``(z, y, x)``.

    Attributes:
        kind: ``segmentation`` (returns a uint8 label map); later ``detection``, ``video``.
        name: model name (bundle folder or run name).
        version: model version (bundle ``version``; ``run`` for a run folder).
        weights_sha256: SHA-256 of the weights file (fingerprints, SEG UIDs).
        labels: foreground labels with codes.
        run: the function doing the work (the model is closed over).
        source: the folder it was loaded from.
        spec: the segmentation recipe (``kind == "segmentation"``).
        metadata: anything else worth reporting (task, description, intended use).
    """

    kind: str
    name: str
    version: str
    weights_sha256: str
    labels: list[LabelInfo]
    run: Callable[[np.ndarray], Any]
    source: Path
    spec: SegmentationSpec | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __call__(self, array: np.ndarray) -> Any:
        with torch.inference_mode():
            return self.run(np.asarray(array, dtype=np.float32))

    def describe(self) -> dict[str, Any]:
        """Identity of the model for reports and fingerprints (no weights)."""
        return {
            "kind": self.kind, "name": self.name, "version": self.version, "weights_sha256": self.weights_sha256,
            "source": str(self.source), "labels": [label.to_dict() for label in self.labels],
        }


@dataclass(frozen=True)
class PredictorSource:
    """A kind of model folder: ``probe(path)`` says whether it is one, ``load(path, device)`` loads it."""

    name: str
    probe: Callable[[Path], bool]
    load: Callable[..., Predictor]  # load(path, device, *, trust=False)


PREDICTOR_SOURCES: Registry = Registry("predictor source")


def _is_bundle(path: Path) -> bool:
    return (path / "configs" / "metadata.json").is_file()


def _load_bundle(path: Path, device: torch.device, *, trust: bool = False) -> Predictor:
    from medkd.bundle.predictor import load_bundle_predictor

    return load_bundle_predictor(path, device, trust=trust)


def _is_bcp_run(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def _load_bcp_run(path: Path, device: torch.device, *, trust: bool = False) -> Predictor:  # noqa: ARG001
    from medkd.methods.bcp.predict import run_predictor

    return run_predictor(path, device=device)


PREDICTOR_SOURCES.register("bundle")(PredictorSource("bundle", _is_bundle, _load_bundle))
PREDICTOR_SOURCES.register("bcp_run")(PredictorSource("bcp_run", _is_bcp_run, _load_bcp_run))


def load_predictor(path: str | Path, device: str | torch.device | None = "auto", *, trust: bool = False) -> Predictor:
    """Load a MONAI bundle folder (``configs/metadata.json``) or a medkd run folder (``config.yaml``).

    Args:
        path: the model folder.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        trust: run a bundle's config code (``$`` expressions, ``_target_`` outside medkd's allowlist) without
            checking it first, like the ecosystem's ``trust_remote_code``; only for bundles you trust.

    Raises:
        DataError: the folder does not exist or is none of the registered kinds.
        UntrustedBundleError: a bundle's configs hold code outside the allowlist and ``trust`` is false.
    """
    path = Path(path)
    if not path.is_dir():
        raise DataError(path, "model folder not found (a MONAI bundle exported by 'medkd bundle export' or a run)")
    for name in PREDICTOR_SOURCES.list():
        source: PredictorSource = PREDICTOR_SOURCES.get(name)
        if source.probe(path):
            return source.load(path, resolve_device(device), trust=trust)
    raise DataError(path, "not a model folder: expected configs/metadata.json (a MONAI bundle) or config.yaml (a run)")
