# SPDX-License-Identifier: Apache-2.0
"""What a method tells medkd's MONAI bundle writer (:mod:`medkd.bundle`): a :class:`BundleSpec` per method.

The writer owns the layout, the metadata schema, the model card's headings and the MONAI checks; the method owns
what differs: how to load a run's network, its label classes and dataset card, the prose of the model card, the
``inferer`` and pre-/post-processing components of ``configs/inference.json``, the tensors of
``network_data_format`` (helpers per kind below: a detection ``pred`` is ``type: object, format: dict`` as in
model-zoo's ``lung_nodule_ct_detection``), the checkpoint stages it exports and which checks do not apply.

A method registers its spec with :func:`register_bundle_spec` in its own ``bundle`` module
(``medkd/methods/<method>/bundle.py``, or any module a plugin imports); :func:`get_bundle_spec` imports
``medkd.methods.<method>.bundle`` on first use, so nothing is imported before a bundle is written or loaded. This
module sits in the methods layer: it imports nothing from :mod:`medkd.bundle`.

A method whose runs are of several kinds (``distill``: segmentation and classification students) registers one
spec per extra kind with ``register_bundle_spec(spec, variant=True)`` (key ``"<method>/<kind>"``), from the module
that registers its main spec; :func:`find_bundle_spec` with ``kind`` picks it (runs say their kind in ``run.json``,
bundles in ``metadata.json`` ``medkd.kind``).

Example:
    >>> nd = network_data_format(image_tensor(spatial_shape=["16*n", "16*n"], modality="CT"),
    ...                          detection_pred(["background", "nodule"]))
    >>> nd["outputs"]["pred"]["type"], nd["outputs"]["pred"]["format"]
    ('object', 'dict')
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medkd.errors import DataError
from medkd.registry import Registry

__all__ = [
    "BUNDLE_SPECS",
    "INTENDED_USE",
    "NIFTI_PATTERNS",
    "BundleSpec",
    "DatasetCard",
    "ExportModel",
    "ModelCardText",
    "classification_pred",
    "detection_pred",
    "find_bundle_spec",
    "get_bundle_spec",
    "image_tensor",
    "network_data_format",
    "register_bundle_spec",
    "segmentation_pred",
    "variant_key",
]

logger = logging.getLogger(__name__)

INTENDED_USE = "Research use only. Not for diagnostic use: not a medical device, not validated for clinical decisions."
#: input files ``monai.bundle run`` picks up in ``dataset_dir`` by default
NIFTI_PATTERNS: tuple[str, ...] = ("*.nii.gz", "*.nii")
#: checks of :func:`medkd.bundle.verify_bundle` a spec may skip
SKIPPABLE_CHECKS = frozenset({"net_in_out", "properties", "weights"})


@dataclass(frozen=True)
class DatasetCard:
    """What a bundle says about the data a run was trained on.

    Attributes:
        title: human name of the dataset.
        modality: DICOM-style modality of the inputs (``MR``, ``CT``, ``XC``, ``n/a``).
        source: where the data come from (``data_source`` in the metadata).
        data_type: formats of the training data and of the bundle's inputs.
        terms: text of ``docs/data_license.txt``; None when the data carry no terms of their own.
        reference: the dataset paper, cited in the README and ``references``.
    """

    title: str
    modality: str
    source: str
    data_type: str
    terms: str | None = None
    reference: str | None = None


@dataclass(frozen=True, kw_only=True)
class ExportModel:
    """One trained network of a run, loaded by :attr:`BundleSpec.load` for export.

    Attributes:
        run: the run folder.
        config: the run's typed config (what the spec's other callables read).
        config_dict: its JSON-ready form (metadata ``medkd.config``).
        net: registry name of the network (``network_def`` ``name``).
        network: the network, weights loaded.
        state: what ``models/model.pt`` holds (a plain state_dict).
        checkpoint_file: the checkpoint the weights come from.
        stage: the stage exported.
        iteration: the checkpoint's iteration.
        best_score: its best validation score (None when missing or not finite).
    """

    run: Path
    config: Any
    config_dict: dict[str, Any]
    net: str
    network: Any
    state: dict[str, Any]
    checkpoint_file: Path
    stage: str
    iteration: int = 0
    best_score: float | None = None


@dataclass(frozen=True, kw_only=True)
class ModelCardText:
    """The method's prose in ``docs/README.md``; the writer adds headings, labels, data, versions and licences.

    Attributes:
        method_long: the ``Method`` line (method name, paper, one-sentence idea).
        network: the ``Network`` line (registry name, parameters, channels).
        inference: the ``Inference`` line (the recipe around the network).
        input_output: body of ``### Input and output`` (``$`` needs no escaping).
        limitations: one bullet each.
        how_to_run: medkd's own ways to run the bundle (Markdown; ``{bundle_path}`` is replaced), shown before the
            ``python -m monai.bundle`` commands.
        equivalence: what ``monai.bundle run`` reproduces (a sentence after the commands), or empty.
        training_keys: config keys of the ``Training configuration`` table, in order.
        metrics: ``(key, header)`` of the evaluation tables read from ``RUN/*.json`` (``mean``/``per_class``).
        validation_score: what the runs' ``val/score`` is (``mean foreground Dice``).
        validation_split: the split that score was computed on (``test`` adds a warning).
        eval_command: how to write an evaluation file, named when the run has none.
    """

    method_long: str
    network: str
    inference: str
    input_output: str
    limitations: Sequence[str] = ()
    how_to_run: str = ""
    equivalence: str = ""
    training_keys: Sequence[str] = ()
    metrics: Sequence[tuple[str, str]] = ()
    validation_score: str = "validation score"
    validation_split: str = "validation"
    eval_command: str = ""


def _nothing(model: ExportModel) -> dict[str, Any]:
    return {}


@dataclass(frozen=True, kw_only=True)
class BundleSpec:
    """Everything the generic bundle writer needs from a method; every callable takes the :class:`ExportModel`.

    Attributes:
        method: method name (``run.json`` ``method``); the registry key.
        kind: ``segmentation``, ``detection``, ``classification``, ``forecasting`` (metadata ``medkd.kind``).
        stages: checkpoint stages the method exports (``medkd bundle export --stage`` choices), final stage last.
        load: ``load(run, checkpoint, stage)`` -> :class:`ExportModel`; ``checkpoint`` is ``best``/``last``,
            ``stage`` one of :attr:`stages` or None for the run's final stage.
        label_names: class names by label value, background (or "none") first.
        dataset_card: the :class:`DatasetCard` of the run's data.
        describe: ``describe(model, label_names, card)`` -> ``(task, default description)``.
        network_def: ``medkd.nets.create_net`` arguments (``name``, ``in_channels``, ...); ``_target_`` is added.
        network_data_format: ``network_data_format(model, label_names, card, divisor)`` -> the metadata block
            (build it with :func:`network_data_format` and the tensor helpers); ``divisor`` is the network's
            ``size_divisor`` or None.
        inferer: the ``inferer`` component (``{"_target_": ..., ...}``).
        preprocessing: transforms of ``preprocessing`` (``LoadImaged`` first: Deploy strips it).
        postprocessing: transforms of ``postprocessing`` (the writer last: Deploy strips it).
        model_card: the :class:`ModelCardText`.
        references: the method's papers (metadata ``references``, before the dataset's).
        intended_use: metadata ``intended_use`` and the README's.
        provenance: extra metadata ``medkd`` keys placed after ``method`` (e.g. ``dataset``).
        recipe: extra metadata ``medkd`` keys placed before ``config`` (e.g. the inference recipe).
        input_patterns: files of ``dataset_dir`` that ``monai.bundle run`` reads.
        skip_checks: checks of ``verify_bundle`` that do not apply (detection: ``net_in_out``, as model-zoo does).
        component_modules: module prefixes of components the spec's configs name beyond ``medkd.nets`` and
            ``medkd.bundle.components``; medkd's trust check allowlists them (installed code only).
        predictor: ``predictor(path, meta, network, inferer, device)`` -> a ``Predictor`` for a bundle of this
            method; None: the kind's loader.
        background: the first of :attr:`label_names` is background and not listed in ``label_classes``
            (segmentation, detection); false: every name is a class (classification).
    """

    method: str
    kind: str
    stages: tuple[str, ...]
    load: Callable[[Path, str, str | None], ExportModel]
    label_names: Callable[[ExportModel], list[str]]
    dataset_card: Callable[[ExportModel], DatasetCard]
    describe: Callable[[ExportModel, Sequence[str], DatasetCard], tuple[str, str]]
    network_def: Callable[[ExportModel], dict[str, Any]]
    network_data_format: Callable[[ExportModel, Sequence[str], DatasetCard, int | None], dict[str, Any]]
    inferer: Callable[[ExportModel], dict[str, Any]]
    preprocessing: Callable[[ExportModel], list[dict[str, Any]]]
    postprocessing: Callable[[ExportModel], list[dict[str, Any]]]
    model_card: Callable[[ExportModel], ModelCardText]
    references: tuple[str, ...] = ()
    intended_use: str = INTENDED_USE
    provenance: Callable[[ExportModel], dict[str, Any]] = _nothing
    recipe: Callable[[ExportModel], dict[str, Any]] = _nothing
    input_patterns: tuple[str, ...] = NIFTI_PATTERNS
    skip_checks: frozenset[str] = field(default_factory=frozenset)
    component_modules: tuple[str, ...] = ()
    predictor: Callable[..., Any] | None = None
    background: bool = True

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError(f"bundle spec {self.method!r}: stages must name at least one stage")
        unknown = set(self.skip_checks) - SKIPPABLE_CHECKS
        if unknown:
            raise ValueError(f"bundle spec {self.method!r}: cannot skip {sorted(unknown)}; "
                             f"skippable: {sorted(SKIPPABLE_CHECKS)}")
        object.__setattr__(self, "skip_checks", frozenset(self.skip_checks))

    def check_stage(self, stage: str | None, run: str | Path) -> None:
        """Raise :class:`~medkd.errors.DataError` naming the run and this method's stages if ``stage`` is not one.

        Example:
            >>> from medkd.methods.bcp.bundle import BCP_BUNDLE_SPEC
            >>> BCP_BUNDLE_SPEC.check_stage("selftrain", "runs/x")
        """
        if stage is not None and stage not in self.stages:
            raise DataError(run, f"stage {stage!r} is not a stage of method {self.method!r}; its stages: "
                                 f"{', '.join(self.stages)}")


#: method name -> its :class:`BundleSpec`
BUNDLE_SPECS: Registry = Registry("bundle spec")


def variant_key(method: str, kind: str) -> str:
    """The registry key of a method's spec for runs of another ``kind`` than its main spec's.

    Example:
        >>> variant_key("distill", "classification")
        'distill/classification'
    """
    return f"{method}/{kind}"


def register_bundle_spec(spec: BundleSpec, *aliases: str, variant: bool = False) -> BundleSpec:
    """Register ``spec`` under its method name (and ``aliases``, e.g. a method's variants); returns it.

    With ``variant``, ``spec`` is the method's spec for runs of ``spec.kind`` only (key :func:`variant_key`); its
    main spec stays the one registered under the method name.
    """
    names = (variant_key(spec.method, spec.kind), *aliases) if variant else (spec.method, *aliases)
    for name in names:
        BUNDLE_SPECS.register(name)(spec)  # type: ignore[arg-type]  # the registry holds specs, not factories
    return spec


def _from_methods_registry(method: str) -> BundleSpec | None:
    """The spec a ``METHODS`` record names (``bundle_spec``: a spec, ``"module:attr"`` or a callable), if any."""
    try:
        registry = importlib.import_module("medkd.methods.registry")
        record = registry.METHODS.get(method)
    except (ImportError, AttributeError, KeyError):
        return None
    found = getattr(record, "bundle_spec", None)
    if isinstance(found, str):
        module, _, attr = found.partition(":")
        found = getattr(importlib.import_module(module), attr) if attr else None
    elif callable(found) and not isinstance(found, BundleSpec):
        found = found()
    return found if isinstance(found, BundleSpec) else None


def find_bundle_spec(method: str, kind: str | None = None) -> BundleSpec | None:
    """The spec of ``method``: registered, named by its ``METHODS`` record, or registered on importing
    ``medkd.methods.<method>.bundle``; None if none of these gives one.

    With ``kind`` (a run's or bundle's kind), the method's variant for that kind if it registers one (see the module
    docstring), else its main spec.
    """
    spec = _main_spec(method)
    if kind is not None and (spec is None or spec.kind != kind) and variant_key(method, kind) in BUNDLE_SPECS:
        return BUNDLE_SPECS.get(variant_key(method, kind))
    return spec


def _main_spec(method: str) -> BundleSpec | None:
    if method in BUNDLE_SPECS:
        return BUNDLE_SPECS.get(method)
    if not method.isidentifier():
        return None
    spec = _from_methods_registry(method)
    if spec is not None:
        return spec
    try:
        importlib.import_module(f"medkd.methods.{method}.bundle")
    except ModuleNotFoundError as err:
        if not (err.name or "").startswith(f"medkd.methods.{method}"):
            raise  # the bundle module exists but one of its own imports is missing
        logger.debug("no bundle module for method %r (%s)", method, err)
        return None
    return BUNDLE_SPECS.get(method) if method in BUNDLE_SPECS else None


def get_bundle_spec(method: str, run: str | Path, kind: str | None = None) -> BundleSpec:
    """:func:`find_bundle_spec`, or a :class:`~medkd.errors.DataError` naming ``run`` and the method.

    Example:
        >>> get_bundle_spec("bcp", "runs/x").kind
        'segmentation'
    """
    spec = find_bundle_spec(method, kind)
    if spec is None:
        known = ", ".join(n for n in BUNDLE_SPECS.list() if "/" not in n) or "none"
        raise DataError(run, f"method {method!r} provides no bundle spec, so its runs cannot be exported as MONAI "
                             f"bundles (methods with one: {known})")
    return spec


# ---- network_data_format helpers, per kind ---------------------------------------------------------------------------
def _channel_def(names: Sequence[str]) -> dict[str, str]:
    return {str(i): name for i, name in enumerate(names)}


def image_tensor(
    *, spatial_shape: Sequence[int | str], modality: str, num_channels: int = 1, value_range: Sequence[float] = (),
    channel_def: Mapping[str, str] | None = None, type: str = "image", format: str = "magnitude",
    dtype: str = "float32", is_patch_data: bool = True,
) -> dict[str, Any]:
    """The ``image`` input tensor (``type: image``; ``series`` for videos ``(C, T, H, W)``).

    Example:
        >>> image_tensor(spatial_shape=[64, 64], modality="MR")["channel_def"]
        {'0': 'image'}
    """
    return {
        "type": type, "format": format, "modality": modality, "num_channels": num_channels,
        "spatial_shape": list(spatial_shape), "dtype": dtype, "value_range": list(value_range),
        "is_patch_data": is_patch_data, "channel_def": dict(channel_def or {"0": "image"}),
    }


def segmentation_pred(class_names: Sequence[str], *, spatial_shape: Sequence[int | str]) -> dict[str, Any]:
    """A segmentation network's ``pred``: float32 logits, one channel per class (background first)."""
    return {
        "type": "image", "format": "segmentation", "num_channels": len(class_names),
        "spatial_shape": list(spatial_shape), "dtype": "float32", "value_range": [], "is_patch_data": True,
        "channel_def": _channel_def(class_names),
    }


def detection_pred(class_names: Sequence[str]) -> dict[str, Any]:
    """A detection network's ``pred``: a dict of ``boxes``, ``labels``, ``scores`` per image (``type: object``,
    ``format: dict``, as model-zoo's ``lung_nodule_ct_detection``); ``verify_net_in_out`` does not apply."""
    return {
        "type": "object", "format": "dict", "num_channels": len(class_names), "spatial_shape": [],
        "dtype": "float32", "value_range": [], "is_patch_data": False, "channel_def": _channel_def(class_names),
    }


def classification_pred(class_names: Sequence[str]) -> dict[str, Any]:
    """A classifier's ``pred``: float32 logits ``(B, classes)``."""
    return {
        "type": "probabilities", "format": "classification", "num_channels": len(class_names), "spatial_shape": [],
        "dtype": "float32", "value_range": [], "is_patch_data": False, "channel_def": _channel_def(class_names),
    }


def network_data_format(image: dict[str, Any], pred: dict[str, Any]) -> dict[str, Any]:
    """``{"inputs": {"image": image}, "outputs": {"pred": pred}}``: the names ``verify_net_in_out`` and Deploy use."""
    return {"inputs": {"image": image}, "outputs": {"pred": pred}}
