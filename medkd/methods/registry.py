# SPDX-License-Identifier: Apache-2.0
"""Methods register themselves: a :class:`Method` record per method in :data:`METHODS`.

A method (BCP, a detector, a video forecaster, a plugin from another package) is a record of its parts: the
config class, ``train``, ``evaluate``, a predictor loader for its run folders, a bundle spec, an app view and the
``medkd <method> ...`` subcommand. Parts are objects or ``"package.module:attribute"`` strings resolved on first use
(:meth:`Method.resolve`), so the registry, and ``medkd --help`` built from it, import no torch.

Run folders name their method in ``RUN/run.json`` (:mod:`medkd.runs`); this module registers the ``run`` predictor
source of :func:`medkd.inference.load_predictor`, which loads a run with its method's ``load_predictor``.

Example:
    >>> toy = Method(name="toy", kind="detection", config_class="builtins:dict", train="builtins:print",
    ...              description="a toy")
    >>> toy.resolve("config_class") is dict
    True
    >>> "bcp" in list_methods()
    True
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from medkd.errors import DataError, MedkdError
from medkd.inference.loading import PREDICTOR_SOURCES, PredictorSource
from medkd.registry import Registry
from medkd.runs import is_run, read_run_info

if TYPE_CHECKING:
    import torch

    from medkd.inference.predictor import Predictor

__all__ = ["Method", "METHODS", "register_method", "get_method", "list_methods", "resolve_ref", "load_run_predictor"]

logger = logging.getLogger(__name__)

#: a part of a method: the object itself, or ``"package.module:attribute"`` imported on first use
Ref = Any


def resolve_ref(ref: Ref) -> Any:
    """The object a reference names: a ``"package.module:attr.sub"`` string is imported, anything else returned.

    Raises:
        ValueError: a string without ``:``.
        ImportError, AttributeError: the module or attribute does not exist.
    """
    if not isinstance(ref, str):
        return ref
    module, sep, attribute = ref.partition(":")
    if not sep or not module or not attribute:
        raise ValueError(f"a reference must look like 'package.module:attribute', got {ref!r}")
    obj: Any = importlib.import_module(module)
    for part in attribute.split("."):
        obj = getattr(obj, part)
    return obj


@dataclass(frozen=True, kw_only=True)
class Method:
    """A registered method and its parts (objects or ``"module:attribute"`` strings, see :func:`resolve_ref`).

    Attributes:
        name: registry name and CLI subcommand (``bcp``).
        kind: what its models are (a :data:`medkd.inference.KINDS` name: ``segmentation``, ``detection``, ...).
        config_class: the typed config dataclass of its presets.
        train: ``train(cfg, data_root, out, *, resume=False, progress=True) -> summary``; writes ``out/run.json``.
        evaluate: evaluates a run folder (signature per method; ``None`` if it has none).
        load_predictor: ``load_predictor(run, device, *, trust=False) -> Predictor`` for its run folders.
        cli: ``cli(subparsers)`` adds ``medkd <name> ...`` to argparse (``None``: no subcommand).
        bundle_spec: what the bundle writer needs from the method (``None``: no bundle export).
        app_view: its app view: a registered view name or a ``"module:attribute"`` reference to ``render(ctx)``
            (``None``: the default view of its kind); for a method of several kinds, ``{kind: view}`` (a kind it
            names no view for gets its kind's view).
        description: one line, shown in ``medkd --help``.
        other_kinds: further kinds its runs may be (``run.json`` ``kind``); ``load_predictor`` takes them too and the
            bundle writer picks the method's spec for the run's kind (``distill``: classification students).
    """

    name: str
    kind: str
    config_class: Ref
    train: Ref
    evaluate: Ref = None
    load_predictor: Ref = None
    cli: Ref = None
    bundle_spec: Ref = None
    app_view: str | Mapping[str, str] | None = None
    description: str = ""
    other_kinds: tuple[str, ...] = ()

    @property
    def kinds(self) -> tuple[str, ...]:
        """Every kind its runs may be: :attr:`kind` first."""
        return (self.kind, *self.other_kinds)

    def resolve(self, part: str) -> Any:
        """The part called ``part`` (``"train"``, ``"cli"``, ...), imported if it is a reference string.

        Raises:
            AttributeError: no such part.
            MedkdError: the method does not provide it (a user-facing error: the CLI prints it and exits 2).
        """
        if part not in self.__dataclass_fields__:
            raise AttributeError(f"Method has no part {part!r}")
        value = getattr(self, part)
        if value is None:
            raise MedkdError(f"method {self.name!r} provides no {part}")
        return resolve_ref(value)


METHODS: Registry = Registry("method")


def register_method(method: Method) -> Method:
    """Register ``method`` under its name (again: the new record replaces the old, with a warning)."""
    return METHODS.register(method.name)(method)


def get_method(name: str) -> Method:
    """The registered method ``name``.

    Raises:
        KeyError: unknown method; the message lists close matches and the known methods.
    """
    return METHODS.get(name)


def list_methods(pattern: str = "*", *, kind: str | None = None) -> list[str]:
    """Sorted names of the registered methods matching a shell-style pattern (and making ``kind``, if given: their
    main kind or one of their :attr:`Method.other_kinds`)."""
    return [name for name in METHODS.list(pattern) if kind is None or kind in METHODS.get(name).kinds]


def load_run_predictor(run: str | Path, device: torch.device | str | None = None, *, trust: bool = False) -> Predictor:
    """Load a run folder with the ``load_predictor`` of the method named in its ``run.json``.

    Raises:
        DataError: not a run folder, an unknown method (naming the folder and the known methods), a method without
            a predictor, or a ``run.json`` whose kind is not the method's.
    """
    run = Path(run)
    info = read_run_info(run)
    name = info["method"]
    if name not in METHODS:
        known = ", ".join(list_methods()) or "none"
        raise DataError(
            run, f"run of unknown method {name!r} (run.json); known methods: {known} (is the package that provides "
            f"{name!r} installed?)"
        )
    method = get_method(name)
    if info["kind"] not in method.kinds:
        raise DataError(run, f"run.json says kind {info['kind']!r}, but method {name!r} makes "
                             f"{' or '.join(map(repr, method.kinds))} models")
    if method.load_predictor is None:
        raise DataError(run, f"method {name!r} cannot load its runs for prediction")
    return method.resolve("load_predictor")(run, device, trust=trust)


def _load_run(path: Path, device: torch.device, *, trust: bool = False) -> Predictor:
    return load_run_predictor(path, device, trust=trust)


PREDICTOR_SOURCES.register("run")(PredictorSource("run", is_run, _load_run))
