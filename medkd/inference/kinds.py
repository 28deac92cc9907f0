# SPDX-License-Identifier: Apache-2.0
"""What a model kind takes and returns: a registry of :class:`Kind` records with input coercion and output checks.

Three kinds are built in:

* ``segmentation``: a float32 volume ``(z, y, x)`` (a 2D image ``(y, x)`` is one slice) -> a uint8 label map of the
  volume's shape (``(1, y, x)`` for a 2D image).
* ``detection``: a float32 image ``(y, x)`` or volume ``(z, y, x)`` -> ``{"boxes", "scores", "labels"}``: boxes
  ``(N, 4)`` float as ``(x_min, y_min, x_max, y_max)`` pixels (``x`` the column) for an image, ``(N, 6)`` as
  ``(x_min, y_min, z_min, x_max, y_max, z_max)`` for a volume (``z`` the slice index), inside the image; scores
  ``(N,)`` float; labels ``(N,)`` non-negative integers.
* ``forecasting``: a frame stream (an array ``(T, y, x[, c])`` or an iterable of frames) -> a dict of forecasts:
  name -> array whose first axis is the analysed time step, every forecast with the same number of steps (at most
  ``T`` for an array input).

Pipelines pick their writers and the app its view by kind; a method of a new kind registers it with
:func:`register_kind` first. :func:`check_output` is what callers and tests use to hold a predictor to its kind.
numpy is imported on call, so registering kinds (and ``medkd --help``) stays cheap.

Example:
    >>> import numpy as np
    >>> image = np.zeros((32, 48), np.float32)
    >>> out = {"boxes": np.array([[4.0, 2.0, 20.0, 12.0]]), "scores": np.array([0.9]), "labels": np.array([0])}
    >>> check_output("detection", out, image)
    >>> {"segmentation", "detection", "forecasting"} <= set(list_kinds())
    True
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from medkd.registry import Registry

if TYPE_CHECKING:
    import numpy as np

__all__ = ["Kind", "KINDS", "register_kind", "get_kind", "list_kinds", "check_output"]


def _as_float32(data: Any) -> np.ndarray:
    import numpy as np  # on call: registering kinds (and medkd --help) imports no numpy

    return np.asarray(data, dtype=np.float32)


def _keep_stream(data: Any) -> Any:
    """Arrays and lists become one array; other iterables (generators, readers) stream through unchanged."""
    import numpy as np

    if isinstance(data, (np.ndarray, list, tuple)):
        return np.asarray(data)
    return data


@dataclass(frozen=True)
class Kind:
    """A model kind: what its predictors take and return.

    Attributes:
        name: registry name (``segmentation``, ``detection``, ``forecasting``, ...).
        input: the input, in words (shapes, dtype).
        output: the output, in words.
        prepare: coerces a caller's input to what the predictor's ``run`` receives (e.g. a float32 array).
        check: ``check(output, input)`` raises ``ValueError`` naming what does not fit the kind.
    """

    name: str
    input: str
    output: str
    prepare: Callable[[Any], Any]
    check: Callable[[Any, Any], None]

    def check_output(self, output: Any, input: Any) -> None:
        """Raise ``ValueError`` if ``output`` is not what this kind returns for ``input``."""
        self.check(output, input)


KINDS: Registry = Registry("kind")


def register_kind(kind: Kind) -> Kind:
    """Add a :class:`Kind` under its name (a second registration replaces the first, with a warning)."""
    return KINDS.register(kind.name)(kind)


def get_kind(name: str) -> Kind:
    """The registered kind ``name``.

    Raises:
        KeyError: unknown kind; the message lists close matches and the known kinds.
    """
    return KINDS.get(name)


def list_kinds(pattern: str = "*") -> list[str]:
    """Sorted names of the registered kinds matching a shell-style pattern."""
    return KINDS.list(pattern)


def check_output(kind: str, output: Any, input: Any) -> None:
    """Check a predictor's ``output`` for ``input`` against the kind's contract.

    Raises:
        KeyError: unknown kind.
        ValueError: the output does not fit (the message says what, e.g. ``boxes must be (N, 4)``).
    """
    get_kind(kind).check_output(output, input)


def _check_segmentation(output: Any, input: Any) -> None:
    import numpy as np

    shape = np.shape(input)
    expected = (1, *shape) if len(shape) == 2 else tuple(shape)
    if not isinstance(output, np.ndarray):
        raise ValueError(  # noqa: TRY004 - every contract violation is a ValueError for the callers
            f"segmentation output must be a numpy label map, got {type(output).__name__}"
        )
    if output.dtype != np.uint8:
        raise ValueError(f"segmentation output must be uint8, got {output.dtype}")
    if output.shape != expected:
        raise ValueError(f"segmentation output shape {output.shape} does not match the input's {expected}")


def _check_detection(output: Any, input: Any) -> None:
    import numpy as np

    shape = np.shape(input)
    if len(shape) not in (2, 3):
        raise ValueError(f"detection input must be an image (y, x) or a volume (z, y, x), got shape {shape}")
    if not isinstance(output, Mapping) or not {"boxes", "scores", "labels"} <= set(output):
        raise ValueError("detection output must be a dict with 'boxes', 'scores' and 'labels'")
    boxes, scores, labels = (np.asarray(output[k]) for k in ("boxes", "scores", "labels"))
    dims = len(shape)
    if boxes.ndim != 2 or boxes.shape[1] != 2 * dims:
        raise ValueError(f"boxes must be (N, {2 * dims}) for a {dims}D input, got {boxes.shape}")
    n = boxes.shape[0]
    if scores.shape != (n,) or labels.shape != (n,):
        raise ValueError(f"scores and labels must be ({n},) like the boxes, got {scores.shape} and {labels.shape}")
    if n and not (np.issubdtype(boxes.dtype, np.floating) and np.issubdtype(scores.dtype, np.floating)):
        raise ValueError(f"boxes and scores must be float, got {boxes.dtype} and {scores.dtype}")
    if n and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got {labels.dtype}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ValueError("boxes and scores must be finite")
    if n and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got {int(labels.min())}")
    low, high = boxes[:, :dims], boxes[:, dims:]
    if (high < low).any():
        raise ValueError("boxes must have max >= min on every axis")
    extent = np.array(shape[::-1], dtype=np.float64)  # (x, y[, z]) sizes of a (z,) y, x array
    if (low < 0).any() or (high > extent).any():
        raise ValueError(f"boxes must lie inside the input (x, y[, z] extent {tuple(int(e) for e in extent)})")


def _check_forecasting(output: Any, input: Any) -> None:
    import numpy as np

    if not isinstance(output, Mapping) or not output:
        raise ValueError("forecasting output must be a non-empty dict of forecasts")
    steps = set()
    for name, value in output.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"forecast names must be non-empty strings, got {name!r}")
        array = np.asarray(value)
        if array.ndim < 1 or not np.issubdtype(array.dtype, np.number):
            raise ValueError(f"forecast {name!r} must be a numeric array with a time axis first, got {array.shape}")
        if not np.isfinite(array).all():
            raise ValueError(f"forecast {name!r} must be finite")
        steps.add(array.shape[0])
    if len(steps) > 1:
        raise ValueError(f"forecasts cover different numbers of time steps: {sorted(steps)}")
    frames = len(input) if isinstance(input, np.ndarray) else None
    if frames is not None and steps.pop() > frames:
        raise ValueError(f"more forecast steps than the {frames} input frames")


for _kind in (
    Kind(
        "segmentation", "float32 volume (z, y, x); a 2D image (y, x) is one slice",
        "uint8 label map of the volume's shape ((1, y, x) for an image)", _as_float32, _check_segmentation,
    ),
    Kind(
        "detection", "float32 image (y, x) or volume (z, y, x)",
        "dict: boxes (N, 4) xyxy or (N, 6) xyzxyz float pixels, scores (N,) float, labels (N,) int >= 0",
        _as_float32, _check_detection,
    ),
    Kind(
        "forecasting", "frame stream: array (T, y, x[, c]) or an iterable of frames",
        "dict: forecast name -> array (steps, ...), steps <= T", _keep_stream, _check_forecasting,
    ),
):
    register_kind(_kind)
