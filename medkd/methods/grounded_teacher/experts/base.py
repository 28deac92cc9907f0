# SPDX-License-Identifier: Apache-2.0
"""The expert interface of Grounded Teacher: a frozen model (or a file of its output) that proposes lesion boxes.

Every expert answers ``predict(image, image_id, prompt_boxes=None) -> ExpertBoxes`` with boxes in the image's
**original pixels** (xyxy, x = column, pixel ``i`` spans ``[i, i + 1)``), scores in ``[0, 1]`` and labels ``0..K-1``
or ``-1`` (class-agnostic; :func:`~medkd.methods.grounded_teacher.experts.classes.assign_classes` gives them a class).
Experts are registered in :data:`EXPERTS` (``sam``, ``csv``, ``none``) and built with :func:`create_expert`.

Example:
    >>> import numpy as np
    >>> expert = create_expert("none")
    >>> len(expert.predict(np.zeros((8, 8), np.float32), "a.png"))
    0
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from medkd.registry import Registry

__all__ = ["ExpertBoxes", "Expert", "EXPERTS", "create_expert", "NoExpert"]


def _as_array(value: Any, dtype: Any, shape_tail: tuple[int, ...]) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype).reshape((-1, *shape_tail))


@dataclass(frozen=True)
class ExpertBoxes:
    """An expert's boxes for one image.

    Args:
        boxes: ``(M, 4)`` float32 xyxy in original pixels.
        scores: ``(M,)`` float32 in ``[0, 1]``.
        labels: ``(M,)`` int64, ``-1`` = class-agnostic.
        prompts: optional ``(M,)`` text prompts (CSV experts), for the ``prompt_map`` class policy.

    Example:
        >>> eb = ExpertBoxes([[0, 0, 4, 4], [1, 1, 2, 2]], [0.9, 0.5], [-1, 0])
        >>> len(eb), eb.boxes.dtype.name, eb.select(eb.scores > 0.8).labels.tolist()
        (2, 'float32', [-1])
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    prompts: tuple[str, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        boxes = _as_array(self.boxes, np.float32, (4,))
        scores = _as_array(self.scores, np.float32, ()).reshape(-1)
        labels = _as_array(self.labels, np.int64, ()).reshape(-1)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels")
        if self.prompts is not None and len(self.prompts) != len(boxes):
            raise ValueError(f"{len(self.prompts)} prompts for {len(boxes)} boxes")
        object.__setattr__(self, "boxes", boxes)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "labels", labels)
        if self.prompts is not None:
            object.__setattr__(self, "prompts", tuple(str(p) for p in self.prompts))

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def empty(cls) -> ExpertBoxes:
        """No boxes."""
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def select(self, keep: np.ndarray | Sequence[int] | Sequence[bool]) -> ExpertBoxes:
        """The boxes picked by a boolean mask or an index array."""
        keep = np.asarray(keep)
        if keep.dtype != bool:
            keep = keep.astype(np.int64)
        prompts = None if self.prompts is None else tuple(np.asarray(self.prompts, dtype=object)[keep].tolist())
        return ExpertBoxes(self.boxes[keep], self.scores[keep], self.labels[keep], prompts)

    def with_labels(self, labels: np.ndarray | Sequence[int]) -> ExpertBoxes:
        """The same boxes with new labels."""
        return ExpertBoxes(self.boxes, self.scores, np.asarray(labels, np.int64), self.prompts)

    def as_dict(self) -> dict[str, np.ndarray]:
        """``{"boxes", "scores", "labels"}``, the detections layout."""
        return {"boxes": self.boxes, "scores": self.scores, "labels": self.labels}


@runtime_checkable
class Expert(Protocol):
    """A frozen box proposer for target images."""

    def predict(self, image: np.ndarray, image_id: str, prompt_boxes: Any = None) -> ExpertBoxes:
        """Boxes for ``image`` (``(H, W)`` float32, original pixels).

        Args:
            image: the image as read (not resized).
            image_id: its file name (CSV experts join on the basename) or another stable id (cache key).
            prompt_boxes: optional boxes to refine: ``(M, 4)`` xyxy, or a detections dict / :class:`ExpertBoxes`
                with ``boxes``, ``scores``, ``labels``.
        """
        ...


EXPERTS: Registry[Any] = Registry("expert")


def create_expert(name: str, **kwargs: Any) -> Expert:
    """Build the registered expert ``name`` (``sam``, ``csv``, ``none``) with keyword arguments.

    Raises:
        KeyError: unknown name (close matches listed).
    """
    # the built-in experts register themselves when the package is imported
    import medkd.methods.grounded_teacher.experts  # noqa: F401

    return EXPERTS.create(name, **kwargs)


class NoExpert:
    """The ``none`` expert: never proposes a box."""

    def predict(self, image: np.ndarray, image_id: str, prompt_boxes: Any = None) -> ExpertBoxes:
        return ExpertBoxes.empty()


@EXPERTS.register("none")
def _none_expert(**kwargs: Any) -> NoExpert:
    return NoExpert()
