# SPDX-License-Identifier: Apache-2.0
"""Output writers registered by model kind: :data:`OUTPUT_WRITERS` maps ``kind -> writer``.

A writer is ``writer(volume, output, ctx) -> (files written, result fields)`` (``volume`` is a 2D
:class:`~medkd.pipeline.instances.DicomImage` in a ``unit: instance`` pipeline, for writers registered with
``images=True``): it writes into ``ctx.work_dir`` (the
runner moves the folder into place once ``result.json`` and ``done.json`` are written) and returns the extra fields
of ``result.json``. It is registered with the ``outputs:`` blocks it reads (:class:`~medkd.pipeline.config.
OutputsConfig`); their settings go into the deterministic UIDs (``ctx.uid_entropy``) and the rerun fingerprint. The
runner never branches on kind: it looks the writer up.

Example:
    >>> from medkd.pipeline.writers import OUTPUT_WRITERS
    >>> OUTPUT_WRITERS.list(), writer_blocks("detection")
    (['detection', 'segmentation'], ('sr',))
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkd.registry import Registry

if TYPE_CHECKING:  # pragma: no cover
    from medkd.pipeline.config import PipelineConfig

__all__ = ["OUTPUT_WRITERS", "WriteContext", "Writer", "register_writer", "writer_blocks", "writes_images"]

Writer = Callable[[Any, Any, "WriteContext"], tuple[list[Path], dict[str, Any]]]


@dataclass
class WriteContext:
    """What a writer gets besides the volume and the model output.

    Attributes:
        work_dir: the series' (or image's) folder under ``OUT/.work/``; write every file here.
        config: the pipeline (its ``outputs`` blocks switch files on and off).
        predictor: the loaded model (``name``, ``version``, ``labels``, ...).
        uid_entropy: sources of the deterministic DICOM UIDs: series UID (the SOP instance UID for an image job),
            model name, version, weights SHA-256 and the writer's block settings.
    """

    work_dir: Path
    config: PipelineConfig
    predictor: Any
    uid_entropy: list[str]


#: model kind -> ``writer(volume, output, ctx) -> (files written, result fields)``; metadata ``blocks``: the
#: ``outputs`` blocks it reads
OUTPUT_WRITERS: Registry = Registry("pipeline output writer")


def register_writer(kind: str, *, blocks: Sequence[str] = (), images: bool = False) -> Callable[[Writer], Writer]:
    """Register the writer of a model ``kind``, reading the ``outputs`` ``blocks`` (e.g. ``("seg", "nifti")``);
    ``images``: it also writes the outputs of one 2D image (``unit: instance`` pipelines), given a
    :class:`~medkd.pipeline.instances.DicomImage` instead of a volume."""
    return OUTPUT_WRITERS.register(kind, blocks=tuple(blocks), images=bool(images))


def writes_images(kind: str) -> bool:
    """Whether the writer of ``kind`` handles 2D images (per-instance jobs); ``False`` for an unknown kind."""
    return kind in OUTPUT_WRITERS.list() and bool(OUTPUT_WRITERS.meta(kind).get("images", False))


def writer_blocks(kind: str) -> tuple[str, ...]:
    """The ``outputs`` blocks the writer of ``kind`` reads (``()`` for a writer registered without any).

    Raises:
        KeyError: no writer for ``kind``; the message names the known kinds.
    """
    return tuple(OUTPUT_WRITERS.meta(kind).get("blocks", ()))
