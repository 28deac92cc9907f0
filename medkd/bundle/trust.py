# SPDX-License-Identifier: Apache-2.0
"""Which code a bundle's configs would run, found by reading them as data (``trust_remote_code`` for bundles).

MONAI's ``ConfigParser`` runs code while it parses: every ``"$import ..."`` is imported as soon as any id is
resolved, other ``"$..."`` strings go to ``eval()``, a ``"_target_"`` is imported by name and called with the other
keys, and ``LoadImaged(reader=...)`` / ``SaveImaged(writer=...)`` import the names they are given.
:func:`check_bundle_trust` reads ``configs/**/*.json|yaml|yml`` (``json``, ``yaml.safe_load``) and
``configs/logging.conf`` as data, walks every value and returns a :class:`Refusal` for each one outside the grammar
below, which is what medkd's own exports (:mod:`medkd.bundle.inference_config`) need. Nothing from the bundle is
imported, evaluated or instantiated: only MONAI and medkd modules under the allowlisted prefixes are imported, to
look up what a name means. :func:`require_trusted` is the gate every loader passes first.

Grammar (everything else is refused):

- keys: plain names; no ``#``/``::`` id paths and no ``+`` merges (MONAI applies those anywhere in the config).
- ``_target_``: a plain string naming a component: a class or function defined under ``medkd.nets``,
  ``medkd.bundle.components`` or a module prefix a registered method's bundle spec lists
  (:attr:`~medkd.methods.bundle_spec.BundleSpec.component_modules`: installed code), or a class defined under
  ``monai.transforms``, ``monai.inferers``, ``monai.handlers``, ``monai.engines`` or ``monai.data``, except the
  datasets that unpickle cache files. A bare name (``"LoadImaged"``) must resolve there through MONAI's
  ``ComponentLocator``, as MONAI resolves it.
  ``_mode_``: ``default``. ``_requires_``, ``_disabled_`` and ``_desc_`` are checked as any value.
- ``reader``, ``writer`` and ``merger_cls`` strings: a class that MONAI finds under that name in ``monai.data``
  (``monai.inferers.merger``), else a component as above; ``weights_only`` must be ``true`` and ``allow_pickle``
  ``false`` where given.
- ``"@id"`` references: any id except an import (which would hand a module to a component).
- ``"%id"`` macros: an id of the same config holding no import and no macro; never another file.
- ``"$import M [as A]"`` and ``"$from M import N [as A]"``: ``M`` in :data:`IMPORTS`; ``M.N`` one of
  :data:`IMPORTS`, a :data:`SAFE_NAMES` entry or a component.
- other ``"$..."`` strings: one Python expression (an ``@id`` in it is read as MONAI's ``__local_refs['id']``) of
  constants, lists, tuples, dicts, comprehensions, ``+ - * / // %``, comparisons, ``and``/``or``/``not``,
  ``x if c else y`` and subscripts, over references, comprehension variables and names that resolve (through the
  imports and MONAI's globals ``monai``, ``torch``, ``np``, ``numpy``) to :data:`SAFE_NAMES`. Calls: of those
  names; of components, with keyword arguments only (``reader=``-like ones as above); ``@id.run()``,
  ``@id.to(...)``, ``@id.eval()``; and ``setattr(torch.backends.cudnn, "benchmark" | "deterministic", True |
  False)``. No other attribute, no module or class as a value, no name starting with ``_``, no lambda.
- ``configs/logging.conf`` (``logging.config.fileConfig`` evaluates it): ``class`` a ``logging`` handler or
  formatter; ``args`` and ``kwargs`` literals, ``sys.stdout`` or ``sys.stderr``.

Example:
    >>> refusals_in_config({"device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    ...                     "net": {"_target_": "medkd.nets.create_net", "name": "unet2d"}})
    []
    >>> [(r.key, r.why) for r in refusals_in_config({"run": ["$__import__('os').system('id')"]})]
    [('run#0', 'calls __import__, which is not allowlisted')]
"""

from __future__ import annotations

import ast
import configparser
import functools
import importlib
import inspect
import logging
import logging.handlers
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medkd.bundle.config_files import config_files, read_config_file, read_metadata
from medkd.bundle.layout import INFERENCE, LOGGING, METADATA
from medkd.errors import DataError, UntrustedBundleError

__all__ = [
    "IMPORTS",
    "MEDKD_PREFIXES",
    "MONAI_PREFIXES",
    "SAFE_NAMES",
    "TRUST_HINT",
    "Refusal",
    "check_bundle_trust",
    "component_problem",
    "medkd_prefixes",
    "refusals_in_config",
    "require_trusted",
]

logger = logging.getLogger(__name__)

#: what a refused bundle's message tells the user
TRUST_HINT = "re-run with --trust-bundle (Python: trust=True) only if you trust who made this bundle"
#: MONAI packages whose classes a bundle may name
MONAI_PREFIXES = ("monai.transforms", "monai.inferers", "monai.handlers", "monai.engines", "monai.data")
#: medkd packages whose classes and functions a bundle may name
MEDKD_PREFIXES = ("medkd.nets", "medkd.bundle.components")
#: modules a ``$import`` may name
IMPORTS = frozenset({"glob", "os", "os.path", "numpy", "torch", "medkd", "monai", *MONAI_PREFIXES, *MEDKD_PREFIXES})
_DTYPES = ("bool", "uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64")
#: names an expression may use or call besides components: pure builtins, dtypes, paths and devices
SAFE_NAMES = frozenset({
    "abs", "all", "any", "bool", "dict", "enumerate", "float", "int", "len", "list", "max", "min", "range", "reversed",
    "round", "set", "sorted", "str", "sum", "tuple", "zip",
    "torch.device", "torch.cuda.is_available", "torch.bfloat16", *(f"torch.{t}" for t in _DTYPES),
    "numpy.bool_", *(f"numpy.{t}" for t in _DTYPES[1:]),
    "os.sep", "os.path.join", "os.path.basename", "os.path.dirname", "os.path.splitext", "os.path.exists",
    "os.path.isfile", "os.path.isdir", "glob.glob",
})
#: MONAI's ``ConfigParser`` globals: name -> module
_GLOBALS = {"monai": "monai", "torch": "torch", "np": "numpy", "numpy": "numpy"}
#: methods an expression may call on a referenced object (``$@evaluator.run()``, ``$@network_def.to(@device)``)
_REF_METHODS = frozenset({"run", "to", "eval"})
#: ``setattr(torch.backends.cudnn, name, True|False)``: the one setattr medkd's ``initialize`` uses
_CUDNN_FLAGS = frozenset({"benchmark", "deterministic"})
#: keys whose strings MONAI imports by name, and the module it looks in first
_NAME_KEYS = {"reader": "monai.data", "writer": "monai.data", "merger_cls": "monai.inferers.merger"}
_MODES = frozenset({"default"})  # "callable" would hand a class (or partial) on, "debug" starts pdb
_REF_NAME = "__local_refs"  # MONAI replaces "@id" in an expression with __local_refs['id']
_ID_SEP = "::"
_DOTTED = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*")
_BIN_OPS = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.FloorDiv, ast.Mod)
_TEXT_LIMIT = 80


@dataclass(frozen=True)
class Refusal:
    """One config value that would run code outside the allowlist.

    Attributes:
        file: the config file, relative to the bundle folder (``configs/inference.json``).
        key: where the value is, as a MONAI id (``inferer#_target_``, ``run#0``).
        text: the offending text, cut to about 80 characters.
        why: what it would do that is not allowed.
    """

    file: str
    key: str
    text: str
    why: str

    def __str__(self) -> str:
        return f"{self.file} {self.key}: {self.text!r} {self.why}"


def _cut(text: str) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= _TEXT_LIMIT else text[: _TEXT_LIMIT - 3] + "..."


# ---- components: what a _target_ (or a name in an expression) may point to ------------------------------------------
def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


@functools.lru_cache(maxsize=1)
def _locator() -> Any:
    from monai.bundle import ComponentLocator

    for package in MONAI_PREFIXES:  # the locator only sees imported modules (import monai skips monai.handlers)
        importlib.import_module(package)
    return ComponentLocator()


def _resolve(name: str) -> Any:
    """The object a dotted name under an allowlisted prefix names (its module imported), or None."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module_name = ".".join(parts[:i])
        if module_name not in sys.modules and not _under(module_name, MONAI_PREFIXES + medkd_prefixes()):
            continue
        try:
            obj: Any = importlib.import_module(module_name)
        except Exception as err:  # noqa: BLE001 - ModuleNotFoundError for an attribute path, OptionalImportError
            logger.debug("%s is not an importable module (%s)", module_name, type(err).__name__)
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr, None)
            if obj is None:
                return None
        return obj
    return None


def medkd_prefixes() -> tuple[str, ...]:
    """:data:`MEDKD_PREFIXES` plus the ``component_modules`` of the bundle specs registered in this process."""
    from medkd.methods.bundle_spec import BUNDLE_SPECS

    extra = {prefix for name in BUNDLE_SPECS for prefix in BUNDLE_SPECS.get(name).component_modules}
    return MEDKD_PREFIXES + tuple(sorted(extra - set(MEDKD_PREFIXES)))


def _allowed() -> str:
    return ", ".join((*medkd_prefixes(), "monai.transforms|inferers|handlers|engines|data"))


def _object_problem(name: str, obj: Any) -> str | None:
    from monai.data import PersistentDataset

    module = getattr(obj, "__module__", None) or ""
    if _under(module, MONAI_PREFIXES):
        if not inspect.isclass(obj):
            return f"names {name}, which is not a MONAI class (MONAI functions are not allowlisted)"
        if issubclass(obj, PersistentDataset):
            return f"names {name}, a dataset that unpickles cache files"
        return None
    if _under(module, medkd_prefixes()) and (inspect.isclass(obj) or inspect.isfunction(obj)):
        return None
    return f"names {name}, defined in {module or 'no module'}, outside the allowlist ({_allowed()})"


def component_problem(name: str) -> str | None:
    """Why ``name`` may not be a ``_target_``; None if it is an allowlisted component.

    Example:
        >>> component_problem("LoadImaged") is None
        True
        >>> component_problem("subprocess.run")[:44]
        'names subprocess.run, outside the allowlist '
    """
    return _component_problem(name, medkd_prefixes())


@functools.lru_cache(maxsize=512)
def _component_problem(name: str, prefixes: tuple[str, ...]) -> str | None:
    """:func:`component_problem` for the allowlist of the moment (``prefixes``: medkd's, cached per allowlist)."""
    if not _DOTTED.fullmatch(name):
        return f"{name!r} is not a Python name"
    if any(part.startswith("_") for part in name.split(".")):
        return f"names {name}, a private or dunder attribute"
    if "." not in name:
        modules = _locator().get_component_module_name(name)
        if modules is None:
            return f"names {name}, which is not a MONAI component (MONAI would import it as a module or builtin)"
        for module in [modules] if isinstance(modules, str) else modules:
            problem = _object_problem(f"{module}.{name}", getattr(sys.modules.get(module), name, None))
            if problem:
                return problem
        return None
    if not _under(name, MONAI_PREFIXES + prefixes):
        return f"names {name}, outside the allowlist ({_allowed()})"
    obj = _resolve(name)
    return f"names {name}, which does not exist" if obj is None else _object_problem(name, obj)


def _name_key_problem(key: str, value: str) -> str | None:
    """A ``reader``/``writer``/``merger_cls`` string: MONAI looks it up in a module, else imports it by name."""
    if "." in value:
        return component_problem(value)
    module = importlib.import_module(_NAME_KEYS[key])
    obj = getattr(module, value, None) if not value.startswith("_") else None
    if obj is None or not inspect.isclass(obj):
        return f"is not a class of {_NAME_KEYS[key]}: MONAI would import {value!r} by name"
    return _object_problem(f"{_NAME_KEYS[key]}.{value}", obj)


# ---- the configs as one namespace ----------------------------------------------------------------------------------
def _iter_strings(node: Any, parts: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _iter_strings(v, (*parts, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _iter_strings(v, (*parts, str(i)))
    elif isinstance(node, str):
        yield parts, node


def _import_node(text: str) -> ast.Import | ast.ImportFrom | str | None:
    """The import statement of a ``$import`` string (a problem string if malformed), None for other strings."""
    if not text.startswith("$") or "import" not in text:
        return None
    try:
        body = ast.parse(text[1:]).body
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None  # not an import: refused as an expression
    if not body or not isinstance(body[0], (ast.Import, ast.ImportFrom)):
        return None
    if len(body) > 1:
        return "holds more than one statement"
    return body[0]


def _import_problem(node: ast.Import | ast.ImportFrom) -> tuple[str, str] | str:
    """(bound name, what it names) of an allowed import, else why it is refused."""
    if len(node.names) != 1:
        return "imports more than one name"
    alias = node.names[0]
    if isinstance(node, ast.Import):
        if alias.name not in IMPORTS:
            return f"imports {alias.name}, which is not allowlisted"
        return alias.asname or alias.name, alias.name
    module = node.module or ""
    if node.level or module not in IMPORTS:
        return f"imports from {'.' * node.level}{module}, which is not allowlisted"
    full = f"{module}.{alias.name}"
    if alias.name == "*" or alias.name.startswith("_"):
        return f"imports {full}"
    if full not in IMPORTS and full not in SAFE_NAMES and component_problem(full):
        return f"imports {full}, which is not allowlisted"
    return alias.asname or alias.name, full


@dataclass
class _File:
    rel: str  # path shown in refusals
    content: Any
    prefix: tuple[str, ...]  # id prefix in MONAI's namespace (("_meta_",) for metadata.json)


class _Checker:
    """Walks the configs of one bundle (or one config dict) and collects refusals."""

    def __init__(self, files: list[_File], namespace: dict[str, Any]) -> None:
        self.files = files
        self.namespace = namespace  # what a "%id" macro reads: the config with "_meta_"
        self.refusals: list[Refusal] = []
        self.names: dict[str, str] = dict(_GLOBALS)
        self.import_ids: set[str] = set()
        self.imports: set[tuple[str, tuple[str, ...]]] = set()
        self.file: _File = files[0] if files else _File("", {}, ())

    def refuse(self, parts: tuple[str, ...], text: Any, why: str) -> None:
        self.refusals.append(Refusal(self.file.rel, "#".join(parts) or "(top level)", _cut(text), why))

    def run(self) -> list[Refusal]:
        bound: dict[str, str] = {}
        for file in self.files:
            self.file = file
            for parts, text in _iter_strings(file.content):
                node = _import_node(text)
                if node is None:
                    continue
                self.imports.add((file.rel, parts))
                self.import_ids.add(_ID_SEP.join(file.prefix + parts))
                result = node if isinstance(node, str) else _import_problem(node)
                if isinstance(result, str):
                    self.refuse(parts, text, result)
                elif bound.setdefault(result[0], result[1]) != result[1]:
                    self.refuse(parts, text, f"binds {result[0]} again, to {result[1]} (was {bound[result[0]]})")
                else:
                    self.names[result[0]] = result[1]
        for file in self.files:
            self.file = file
            self.walk(file.content, ())
        return self.refusals

    # -- values --
    def walk(self, node: Any, parts: tuple[str, ...], name_key: str | None = None) -> None:
        if isinstance(node, dict):
            self.component(node, parts)
            for key, value in node.items():
                key = str(key)
                if "#" in key or _ID_SEP in key or key.startswith("+"):
                    self.refuse((*parts, key), key, "is an id path or merge key: MONAI would apply it elsewhere "
                                                    "in the config")
                if key == "weights_only" and value is not True or key == "allow_pickle" and value is not False:
                    self.refuse((*parts, key), value, f"sets {key}: files would be unpickled")
                elif key not in ("_target_", "_mode_") or "_target_" not in node:
                    self.walk(value, (*parts, key), key if key in _NAME_KEYS else None)
        elif isinstance(node, list):
            for i, value in enumerate(node):
                self.walk(value, (*parts, str(i)), name_key)
        elif isinstance(node, str):
            self.string(node, parts, name_key)

    def component(self, node: dict[str, Any], parts: tuple[str, ...]) -> None:
        if "_target_" not in node:
            return
        target, mode = node["_target_"], node.get("_mode_", "default")
        if not isinstance(target, str) or target[:1] in ("$", "@", "%"):
            self.refuse((*parts, "_target_"), target, "must be a plain string naming a component")
        elif problem := component_problem(target):
            self.refuse((*parts, "_target_"), target, problem)
        if mode not in _MODES:
            self.refuse((*parts, "_mode_"), mode, f"must be one of {sorted(_MODES)}")

    def string(self, text: str, parts: tuple[str, ...], name_key: str | None) -> None:
        from monai.bundle import ConfigParser

        if (self.file.rel, parts) in self.imports:
            return  # checked in run()
        try:
            value = ConfigParser.resolve_relative_ids(_ID_SEP.join(self.file.prefix + parts), text)
        except ValueError as err:
            self.refuse(parts, text, f"has a bad relative id: {err}")
            return
        if value.startswith("%"):
            self.macro(value, text, parts, name_key)
        elif name_key is not None and (value.startswith("$") or _is_whole_ref(value)):
            if problem := self.computed_name_problem(value, name_key):
                self.refuse(parts, text, problem)
        elif value.startswith("$"):
            if problem := self.expression(value[1:]):
                self.refuse(parts, text, problem)
        elif _is_whole_ref(value):
            if problem := self.ref_problem(value[1:]):
                self.refuse(parts, text, problem)
        elif name_key is not None and (problem := _name_key_problem(name_key, value)):
            self.refuse(parts, text, problem)

    def computed_name_problem(self, value: str, name_key: str) -> str | None:
        """A ``$``/``@`` value of a ``reader``-like key may be a component, never a string MONAI would import."""
        if value.startswith("@"):
            try:
                target = _lookup(self.namespace, value[1:])
            except (KeyError, IndexError, ValueError, TypeError):
                target = None
            if isinstance(target, dict) and "_target_" in target:
                return self.ref_problem(value[1:])
        else:
            try:
                node = ast.parse(value[1:].strip(), mode="eval").body
            except (SyntaxError, ValueError, RecursionError, MemoryError):
                node = None
            name = _Expression(self).dotted(node) if isinstance(node, (ast.Name, ast.Attribute)) else None
            if name is not None and "." in name and component_problem(name) is None:
                return None
        return f"is computed in {name_key!r}: only a class name or a component is allowed there (MONAI imports " \
               "strings given to it by name)"

    def ref_problem(self, ref: str) -> str | None:
        if ref == "" or any(i == ref or i.startswith(ref + _ID_SEP) for i in self.import_ids):
            return f"refers to an import ({ref or 'the whole config'}): it would hand a module to the config"
        return None

    def macro(self, value: str, text: str, parts: tuple[str, ...], name_key: str | None) -> None:
        from monai.bundle import ConfigParser

        path, ids = ConfigParser.split_path_id(value[1:])
        if path:
            self.refuse(parts, text, f"copies from another file ({path}), which is not checked")
            return
        if name_key is not None:
            self.refuse(parts, text, f"is a macro in {name_key!r}, which MONAI imports by name")
            return
        try:
            target = _lookup(self.namespace, ids)
        except (KeyError, IndexError, ValueError, TypeError):
            self.refuse(parts, text, f"copies {ids!r}, which this config does not define")
            return
        for _, inner in _iter_strings(target):
            if inner.startswith("%") or _import_node(inner) is not None:
                self.refuse(parts, text, "copies a macro or an import")
                return

    # -- expressions --
    def expression(self, code: str) -> str | None:
        """Why the ``$`` expression ``code`` is refused (``@id`` as MONAI substitutes it), None if allowed."""
        try:
            tree = ast.parse(_substitute_refs(code).strip(), mode="eval")
            return _Expression(self).problem(tree.body)
        except (SyntaxError, ValueError) as err:
            return f"is not one Python expression ({getattr(err, 'msg', err)})"
        except (RecursionError, MemoryError):
            return "is nested too deeply to check"


def _is_whole_ref(value: str) -> bool:
    from monai.bundle.reference_resolver import ReferenceResolver

    return bool(ReferenceResolver.id_matcher.fullmatch(ReferenceResolver.normalize_id(value)))


def _substitute_refs(code: str) -> str:
    """``code`` with each ``@id`` replaced as MONAI's ``ReferenceResolver.update_refs_pattern`` replaces it."""
    from monai.bundle.reference_resolver import ReferenceResolver

    code = ReferenceResolver.normalize_id(code)
    for item in sorted(ReferenceResolver.id_matcher.findall(code), key=len, reverse=True):
        code = code.replace(item, f"{_REF_NAME}['{item[1:]}']")
    return code


def _lookup(config: Any, ids: str) -> Any:
    node = config
    for part in [p for p in ids.split(_ID_SEP)] if ids else []:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


class _Expression:
    """The structural check of one expression's AST (see the module docstring)."""

    def __init__(self, checker: _Checker) -> None:
        self.checker = checker
        self.locals: set[str] = set()

    def ref(self, node: ast.AST) -> str | None:
        """The id of ``__local_refs['id']``, else None."""
        if (isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == _REF_NAME
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str)):
            return node.slice.value
        return None

    def dotted(self, node: ast.AST) -> str | None:
        """``os.path.join`` for a chain of names rooted in a module or builtin name, else None."""
        if isinstance(node, ast.Name):
            return None if node.id in self.locals else self.checker.names.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base is not None else None
        return None

    def allowed_name(self, name: str) -> bool:
        return name in SAFE_NAMES or ("." in name and component_problem(name) is None)

    def problem(self, node: ast.AST) -> str | None:
        """Why ``node`` is refused (the first reason found), None if it is allowed: one branch per node type."""
        if isinstance(node, ast.Constant):
            return None
        if (ref := self.ref(node)) is not None:
            return self.checker.ref_problem(ref)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            return self.all(node.elts)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                return "unpacks a mapping (**)"
            return self.all([*node.keys, *node.values])  # type: ignore[list-item]
        if isinstance(node, ast.BinOp):
            if not isinstance(node.op, _BIN_OPS):
                return f"uses the operator {type(node.op).__name__}"
            return self.all([node.left, node.right])
        if isinstance(node, ast.UnaryOp):
            return self.problem(node.operand)
        if isinstance(node, ast.BoolOp):
            return self.all(node.values)
        if isinstance(node, ast.Compare):
            return self.all([node.left, *node.comparators])
        if isinstance(node, ast.IfExp):
            return self.all([node.test, node.body, node.orelse])
        if isinstance(node, ast.Subscript):
            return self.all([node.value, node.slice])
        if isinstance(node, ast.Slice):
            return self.all([n for n in (node.lower, node.upper, node.step) if n is not None])
        if isinstance(node, (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)):
            return self.comprehension(node)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, (ast.Name, ast.Attribute)):
            return self.name(node)
        return f"uses {type(node).__name__}, which is not allowed in a config expression"

    def all(self, nodes: list[ast.AST]) -> str | None:
        for node in nodes:
            if problem := self.problem(node):
                return problem
        return None

    def comprehension(self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp) -> str | None:
        outer = set(self.locals)  # comprehension variables exist inside the comprehension only
        try:
            for gen in node.generators:
                targets = gen.target.elts if isinstance(gen.target, ast.Tuple) else [gen.target]
                if gen.is_async or not all(isinstance(t, ast.Name) and not t.id.startswith("_") for t in targets):
                    return "binds something other than plain names in a comprehension"
                if problem := self.all([gen.iter, *gen.ifs]):
                    return problem
                self.locals.update(t.id for t in targets)  # type: ignore[attr-defined]
            return self.all([node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt])
        finally:
            self.locals = outer

    def name(self, node: ast.Name | ast.Attribute) -> str | None:
        if isinstance(node, ast.Name) and node.id in self.locals:
            return None
        if isinstance(node, ast.Attribute) and self.ref(node.value) is not None:
            return f"reads .{node.attr} of a referenced object"
        name = self.dotted(node)
        if name is None:
            return f"uses {_cut(ast.unparse(node))}, an attribute of a value"
        if name in SAFE_NAMES:
            return None
        if name in IMPORTS or name in _GLOBALS.values():
            return f"hands the module {name} to the config"
        if self.allowed_name(name):  # a class handed on could be called with data as its first argument
            return f"hands the component {name} itself to the config (call it, or use a _target_)"
        return f"uses {name}, which is not allowlisted"

    def call(self, node: ast.Call) -> str | None:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            return "unpacks arguments (* or **)"
        func = node.func
        if isinstance(func, ast.Attribute) and self.ref(func.value) is not None:
            if func.attr not in _REF_METHODS:
                return f"calls .{func.attr}() of a referenced object (allowed: {', '.join(sorted(_REF_METHODS))})"
        elif isinstance(func, ast.Name) and func.id == "setattr" and "setattr" not in self.checker.names:
            return self.cudnn_setattr(node)
        else:
            name = self.dotted(func)
            if name is None and isinstance(func, ast.Attribute) and (problem := self.problem(func.value)):
                return problem
            if name is None:
                return f"calls {_cut(ast.unparse(func))}, which is not a plain allowlisted name"
            if not self.allowed_name(name):
                return f"calls {name}, which is not allowlisted"
            if name not in SAFE_NAMES and (problem := self.component_arguments(name, node)):
                return problem
        return self.all([*node.args, *(k.value for k in node.keywords)])

    def component_arguments(self, name: str, node: ast.Call) -> str | None:
        """A component called in an expression: keywords only, and ``reader``-like ones as in a config dict."""
        if node.args:
            return f"passes {name} positional arguments (use keywords, as a _target_ does)"
        for keyword in node.keywords:
            if keyword.arg not in _NAME_KEYS:
                continue
            value = keyword.value
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                problem = _name_key_problem(keyword.arg, value.value)
            else:
                dotted = self.dotted(value) if isinstance(value, (ast.Name, ast.Attribute)) else None
                problem = None if dotted and "." in dotted and component_problem(dotted) is None else "is computed"
            if problem:
                return f"passes {keyword.arg}= to {name}, which {problem}"
        return None

    def cudnn_setattr(self, node: ast.Call) -> str | None:
        args = node.args
        if (len(args) == 3 and not node.keywords and self.dotted(args[0]) == "torch.backends.cudnn"
                and isinstance(args[1], ast.Constant) and args[1].value in _CUDNN_FLAGS
                and isinstance(args[2], ast.Constant) and isinstance(args[2].value, bool)):
            return None
        return "calls setattr (allowed only as setattr(torch.backends.cudnn, 'benchmark', True|False))"


# ---- logging.conf --------------------------------------------------------------------------------------------------
def _logging_problems(file: Path) -> list[tuple[str, str, str]]:
    """(key, text, why) of the fields ``logging.config.fileConfig`` would evaluate as code."""
    parser = configparser.RawConfigParser()
    try:
        parser.read_string(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, configparser.Error) as err:
        raise DataError(file, f"not a readable logging config: {type(err).__name__}: {err}") from err
    problems = []
    for section in parser.sections():
        for field in ("class", "args", "kwargs"):
            value = parser.get(section, field, fallback="").strip()
            if value and (why := _logging_field_problem(field, value)):
                problems.append((f"{section}#{field}", value, why))
    return problems


def _logging_field_problem(field: str, value: str) -> str | None:
    try:
        tree = ast.parse(value, mode="eval").body
    except SyntaxError:
        return "is not a Python expression (fileConfig evaluates it)"
    if field == "class":
        module, _, name = ast.unparse(tree).rpartition(".")
        if isinstance(tree, (ast.Name, ast.Attribute)) and module in ("", "logging", "logging.handlers"):
            obj = getattr(sys.modules[module or "logging"], name, None)
            if inspect.isclass(obj) and issubclass(obj, (logging.Handler, logging.Formatter)):
                return None
        return "is not a logging handler or formatter class (fileConfig imports and calls it)"
    for node in ast.walk(tree):
        if isinstance(node, (ast.Attribute, ast.Name)) and ast.unparse(node) in ("sys", "sys.stdout", "sys.stderr"):
            continue
        if not isinstance(node, (ast.Constant, ast.Tuple, ast.List, ast.Dict, ast.Load, ast.UnaryOp, ast.USub)):
            return "is not a literal, sys.stdout or sys.stderr (fileConfig evaluates it)"
    return None


# ---- public API ----------------------------------------------------------------------------------------------------
def refusals_in_config(config: dict[str, Any], file: str = INFERENCE,
                       meta: dict[str, Any] | None = None) -> list[Refusal]:
    """The refusals of one config dict (and its metadata), as :func:`check_bundle_trust` finds them in a bundle."""
    files = [_File(file, config, ())]
    if meta is not None:
        files.append(_File(METADATA, meta, ("_meta_",)))
    return _Checker(files, {**config, "_meta_": meta or {}}).run()


def _register_method(meta: dict[str, Any]) -> None:
    """Import the bundle spec of the method the metadata names (installed code under ``medkd.methods``, or a
    ``METHODS`` record), so its ``component_modules`` count; nothing from the bundle runs."""
    from medkd.methods.bundle_spec import find_bundle_spec

    info = meta.get("medkd") if isinstance(meta.get("medkd"), dict) else {}
    method = info.get("method")
    if isinstance(method, str):
        try:
            kind = info.get("kind")
            find_bundle_spec(method, kind if isinstance(kind, str) else None)
        except ImportError as err:
            logger.warning("the bundle spec of method %r cannot be imported: %s", method, err)


def check_bundle_trust(path: str | Path) -> list[Refusal]:
    """Every config value of a bundle folder that would run code outside the allowlist (module docstring).

    Reads ``configs/**/*.json|yaml|yml`` and ``configs/logging.conf`` as data; nothing is run.

    Returns:
        The refusals, in file order; empty if the bundle loads without ``trust``.

    Raises:
        DataError: a config file is not valid JSON/YAML, or ``metadata.json`` is not an object.
    """
    path = Path(path)
    meta = read_metadata(path) if (path / METADATA).is_file() else {}
    _register_method(meta)
    inference: Any = {}
    files = []
    for file in config_files(path):
        rel = file.relative_to(path).as_posix()
        content = meta if rel == METADATA else read_config_file(file)
        if rel == INFERENCE:
            inference = content
        files.append(_File(rel, content, ("_meta_",) if rel == METADATA else ()))
    namespace = {**inference, "_meta_": meta} if isinstance(inference, dict) else {"_meta_": meta}
    try:
        refusals = _Checker(files, namespace).run()
    except RecursionError as err:
        raise DataError(path / "configs", "nested too deeply to be checked") from err
    if (path / LOGGING).is_file():
        refusals += [Refusal(LOGGING, key, _cut(text), why) for key, text, why in _logging_problems(path / LOGGING)]
    return refusals


def require_trusted(path: str | Path, trust: bool = False) -> None:
    """Refuse a bundle whose configs hold code outside the allowlist, unless ``trust``.

    Args:
        path: bundle folder.
        trust: skip the check: the configs may run any code (like ``trust_remote_code``).

    Raises:
        UntrustedBundleError: names the first refused key and file, how many others there are, and how to proceed.
        DataError: a config file is not valid JSON/YAML.
    """
    if trust:
        logger.info("%s: trusted (--trust-bundle): its configs' code is not checked", path)
        return
    refusals = check_bundle_trust(path)
    if not refusals:
        return
    first, others = refusals[0], len(refusals) - 1
    more = f"; {others} more refused (medkd bundle verify lists them)" if others else ""
    raise UntrustedBundleError(
        Path(path) / first.file, first.key,
        f"{first.text!r} {first.why}{more}. Nothing was run: the bundle's configs hold code outside medkd's "
        f"allowlist; {TRUST_HINT}",
    )
