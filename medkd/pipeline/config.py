# SPDX-License-Identifier: Apache-2.0
"""The pipeline YAML (``pipelines/<name>.yaml``): :class:`PipelineConfig` with one typed block per output writer.

``outputs:`` holds one block per file kind; a block a model's writer does not use is ignored (a segmentation model
writes ``seg`` and ``nifti``, a detection model ``sr``; see :mod:`medkd.pipeline.writers`):

.. code-block:: yaml

    outputs:
      seg: {enabled: true, type: binary}   # DICOM SEG; type: binary (every viewer) or labelmap (highdicom >= 0.24)
      nifti: {enabled: true}               # label map as NIfTI on the series geometry
      sr: {enabled: true}                  # DICOM Comprehensive 3D SR (TID 1500) of the detections

``result.json`` (and, for detection models, the ``detections.json``/``.csv`` sidecars) are always written: reruns,
reports and the app read them. Unknown keys in a block are errors naming the file and the dotted key
(``outputs.seg.tpye``), and ``--set outputs.seg.type=labelmap`` reaches a block's field.

``unit:`` says what one job is: ``series`` (default) decodes every selected series into one volume (CT, MR) and
writes one set of outputs per series into ``OUT/<StudyUID>/<SeriesUID>/``; ``instance`` makes every selected SOP
instance (one file, one 2D image: mammography MG, DX, CR) a job of its own, with its own outputs in
``OUT/<StudyUID>/<SeriesUID>/<SOPInstanceUID>/`` and its own report row (``kind: instance``). With ``instance``,
selection rules are checked on each image's own header (``ViewPosition: CC`` picks the CC views of a series), the
model gets a float32 ``(y, x)`` image, and only models whose writer handles 2D images (``detection``: a 2D SR per
image) can run; ``min_slices`` (above 1) and ``all_matched: false`` have no meaning there and are errors:

.. code-block:: yaml

    unit: instance
    selection:
      - {name: mammo, conditions: {Modality: "(?i)^MG$"}}

The keys of issue 8's YAML still read: ``write_seg`` is ``outputs.seg.enabled``, ``seg_type`` is
``outputs.seg.type`` and ``write_nifti`` is ``outputs.nifti.enabled``; giving an old key and its block field
different values is a :class:`~medkd.errors.ConfigError`.

Example:
    >>> cfg = PipelineConfig(name="ct", outputs={"seg": {"type": "labelmap"}})
    >>> cfg.outputs.seg.enabled, str(cfg.outputs.seg.type), cfg.outputs.nifti.enabled
    (True, 'labelmap', True)
    >>> PipelineConfig(write_nifti=False).outputs.nifti.enabled  # the old spelling
    False
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkd.config import config_from_dict, load_config
from medkd.errors import ConfigError, DataError
from medkd.io.dicom_seg import SegType

__all__ = [
    "LEGACY_OUTPUT_KEYS",
    "NiftiOutput",
    "OutputsConfig",
    "PipelineConfig",
    "SegOutput",
    "SrOutput",
    "UNITS",
    "check_device",
    "load_pipeline",
    "resolve_model",
]

logger = logging.getLogger(__name__)

_DEVICE = re.compile(r"auto|cpu|mps|cuda(?::[0-9]+)?")

#: values of ``unit``: what one job of a pipeline is
UNITS: tuple[str, ...] = ("series", "instance")

#: issue 8's top-level keys -> (block, field) of ``outputs`` they now spell
LEGACY_OUTPUT_KEYS: dict[str, tuple[str, str]] = {
    "write_seg": ("seg", "enabled"),
    "seg_type": ("seg", "type"),
    "write_nifti": ("nifti", "enabled"),
}


def check_device(device: str, key: str = "device") -> str:
    """``device`` if it is ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, else a :class:`ConfigError` naming
    ``key``."""
    if not isinstance(device, str) or not _DEVICE.fullmatch(device):
        raise ConfigError(f"{key} must be auto, cpu, cuda, cuda:N or mps, got {str(device)[:40]!r}")
    return device


@dataclass(frozen=True, kw_only=True)
class SegOutput:
    """``outputs.seg``: a DICOM SEG per series (segmentation models).

    Attributes:
        enabled: write ``seg.dcm`` (default true). ``None`` means "not set" (then ``write_seg`` or the default).
        type: ``binary`` (default; one bit-packed frame per slice and segment, every viewer reads it) or
            ``labelmap`` (one integer frame per slice; highdicom >= 0.24, few viewers read it).
    """

    enabled: bool | None = None
    type: SegType | None = None

    def uid_entropy(self) -> list[str]:
        """The settings that change the SEG: part of its deterministic UIDs."""
        return [str(self.type or SegType.BINARY)]


@dataclass(frozen=True, kw_only=True)
class NiftiOutput:
    """``outputs.nifti``: the label map as ``mask.nii.gz`` on the series geometry (segmentation models).

    Attributes:
        enabled: write it (default true). ``None`` means "not set" (then ``write_nifti`` or the default).
    """

    enabled: bool | None = None

    def uid_entropy(self) -> list[str]:
        """No DICOM UIDs depend on the NIfTI file."""
        return []


@dataclass(frozen=True, kw_only=True)
class SrOutput:
    """``outputs.sr``: a DICOM Comprehensive 3D SR (TID 1500) of the detections (detection models), per series
    (3D points) or, with ``unit: instance``, per image (2D rectangles, :mod:`medkd.io.dicom_sr2d`).

    A series (or image) with no detection gets no SR (TID 1500 needs a finding); its ``detections.json``/``.csv``
    say so.

    Attributes:
        enabled: write ``sr.dcm`` (default true).
    """

    enabled: bool = True

    def uid_entropy(self) -> list[str]:
        """Marks the SR's UIDs apart from a SEG's of the same series and model."""
        return ["sr"]


@dataclass(frozen=True, kw_only=True)
class OutputsConfig:
    """``outputs:``: one block per writer's file; see the module docstring."""

    seg: SegOutput = field(default_factory=SegOutput)
    nifti: NiftiOutput = field(default_factory=NiftiOutput)
    sr: SrOutput = field(default_factory=SrOutput)


_DEFAULTS: dict[tuple[str, str], Any] = {("seg", "enabled"): True, ("seg", "type"): SegType.BINARY,
                                         ("nifti", "enabled"): True}


@dataclass(frozen=True, kw_only=True)
class PipelineConfig:
    """A pipeline YAML (``pipelines/<name>.yaml``).

    Attributes:
        name: pipeline name (reports, SEG series description).
        model: a MONAI bundle exported by ``medkd bundle export`` or a medkd run folder; a relative path is
            looked up from the working directory, then the YAML's folder, then ``$MEDKD_MODELS`` (default
            ``models/``).
        description: what the pipeline is for.
        device: ``auto``, ``cpu``, ``cuda[:N]`` or ``mps``.
        selection: rules ``{name, conditions: {Keyword: regex | [min, max]}, min_slices}``; first match wins;
            empty selects every image series.
        all_matched: process every series that matches a rule (default); ``false`` keeps one series per study and
            rule, the one with the most slices (ties: lowest SeriesNumber, then UID), as MONAI Deploy's selector.
        unit: ``series`` (default: a series is one volume, one job) or ``instance`` (every selected SOP instance is a
            2D image and a job of its own, written to ``OUT/<study>/<series>/<SOPInstanceUID>/``; rules are checked
            on each image's header; ``min_slices`` above 1 and ``all_matched: false`` are errors). See the module
            docstring.
        outputs: one block per written file (:class:`OutputsConfig`): ``seg: {enabled, type}`` (DICOM SEG,
            ``binary`` or ``labelmap``), ``nifti: {enabled}`` (NIfTI mask), ``sr: {enabled}`` (DICOM SR of
            detections). ``result.json`` and the detection sidecars are always written.
        write_seg: old spelling of ``outputs.seg.enabled`` (still read; ``None`` after reading).
        seg_type: old spelling of ``outputs.seg.type`` (still read; ``None`` after reading).
        write_nifti: old spelling of ``outputs.nifti.enabled`` (still read; ``None`` after reading).

    Raises:
        ConfigError: a bad ``device``, ``seg_type`` or ``unit`` (or ``unit: instance`` with ``min_slices`` above 1
            or ``all_matched: false``), or an old key that disagrees with its ``outputs`` field.
    """

    name: str = "pipeline"
    model: str = ""
    description: str = ""
    device: str = "auto"
    selection: list[dict[str, Any]] = field(default_factory=list)
    all_matched: bool = True
    unit: str = "series"
    outputs: OutputsConfig = field(default_factory=OutputsConfig)
    write_seg: bool | None = None
    seg_type: str | None = None
    write_nifti: bool | None = None

    def __post_init__(self) -> None:
        check_device(self.device, "device")
        _check_unit(self.unit, self.selection, self.all_matched)
        if self.seg_type is not None and str(self.seg_type) not in ("binary", "labelmap"):
            raise ConfigError(f"seg_type must be 'binary' or 'labelmap', got {str(self.seg_type)[:40]!r}")
        outputs = self.outputs
        if isinstance(outputs, Mapping):
            outputs = config_from_dict(OutputsConfig, outputs, source="PipelineConfig", prefix="outputs.")
        blocks = {f.name: getattr(outputs, f.name) for f in dataclasses.fields(OutputsConfig)}
        changes: dict[str, dict[str, Any]] = {}
        for old_key, (block, key) in LEGACY_OUTPUT_KEYS.items():
            old, new = getattr(self, old_key), getattr(blocks[block], key)
            if old is not None:
                old = SegType(str(old)) if key == "type" else old
                if new is not None and new != old:
                    raise ConfigError(
                        f"{old_key}: {_plain(old)!r} disagrees with outputs.{block}.{key}: {_plain(new)!r} "
                        f"({old_key} is the old spelling of outputs.{block}.{key}: keep only the outputs block)"
                    )
                logger.info("pipeline %s: %s is the old spelling of outputs.%s.%s", self.name, old_key, block, key)
            value = old if old is not None else new
            changes.setdefault(block, {})[key] = _DEFAULTS[(block, key)] if value is None else value
            object.__setattr__(self, old_key, None)
        resolved = {name: dataclasses.replace(blocks[name], **changes.get(name, {})) for name in blocks}
        object.__setattr__(self, "outputs", OutputsConfig(**resolved))


def _check_unit(unit: Any, selection: Any, all_matched: Any) -> None:
    """A :class:`ConfigError` for a ``unit`` other than ``series``/``instance``, or settings that only mean
    something per series (``min_slices`` above 1, ``all_matched: false``) with ``unit: instance``."""
    if not isinstance(unit, str) or unit not in UNITS:
        raise ConfigError(f"unit must be 'series' (a series is one volume) or 'instance' (an image per SOP instance: "
                          f"MG, DX, CR), got {str(unit)[:40]!r}")
    if unit != "instance":
        return
    if all_matched is False:
        raise ConfigError("all_matched: false keeps one series per study; with unit: instance every selected image "
                          "is processed: remove all_matched or use unit: series")
    rules = selection if isinstance(selection, Sequence) and not isinstance(selection, (str, bytes)) else []
    for i, rule in enumerate(rules):
        slices = rule.get("min_slices", 1) if isinstance(rule, Mapping) else 1
        if isinstance(slices, int) and not isinstance(slices, bool) and slices > 1:
            raise ConfigError(f"selection[{i}].min_slices: {slices} counts a series' files; with unit: instance each "
                              "image is its own job: remove min_slices or use unit: series")


def _plain(value: Any) -> Any:
    return str(value) if isinstance(value, SegType) else value


def load_pipeline(path: str | Path, overrides: Sequence[str] = ()) -> PipelineConfig:
    """Read a pipeline YAML plus ``key=value`` overrides (dotted keys reach ``outputs`` blocks).

    Raises:
        ConfigError: unknown keys (nested ones by dotted path, e.g. ``outputs.seg.tpye``), bad values or bad
            selection rules, naming the file.
    """
    from medkd.io.dicom_select import parse_rules

    cfg = load_config(PipelineConfig, path, overrides)
    parse_rules(cfg.selection, source=f"{path}: selection")
    return cfg


def resolve_model(model: str | Path, pipeline_file: str | Path | None = None) -> Path:
    """Find the model folder: absolute, else the working directory, the pipeline's folder, ``$MEDKD_MODELS``."""
    model = Path(os.path.expanduser(str(model)))
    if not str(model) or str(model) == ".":
        raise ConfigError("the pipeline names no model: set 'model:' in the YAML or pass --model")
    candidates = [model] if model.is_absolute() else [Path.cwd() / model]
    if not model.is_absolute():
        if pipeline_file is not None:
            candidates.append(Path(pipeline_file).resolve().parent / model)
        root = Path(os.environ.get("MEDKD_MODELS", "models"))
        candidates += [root / model, root / model.name]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise DataError(model, f"model folder not found (tried {tried}); export one with 'medkd bundle export' "
                           "or set MEDKD_MODELS / --model")
