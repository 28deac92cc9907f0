# SPDX-License-Identifier: Apache-2.0
"""Typed configs: frozen dataclasses read from YAML (``yaml.safe_load``) and ``key=value`` overrides.

Every key is checked against the dataclass fields: an unknown key is a :class:`ConfigError` that names
the key, the file and the valid keys (with close matches). Values are coerced to the field's type.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True, kw_only=True)
    ... class C:
    ...     lr: float = 0.01
    ...     patch: tuple[int, ...] = (64, 64)
    >>> config_from_dict(C, {"lr": "0.1"}, overrides=["patch=[32, 32]"])
    C(lr=0.1, patch=(32, 32))
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medkd.errors import ConfigError

__all__ = ["load_config", "config_from_dict", "config_to_dict", "parse_overrides"]

T = TypeVar("T")


def parse_overrides(items: Sequence[str]) -> dict[str, Any]:
    """Parse ``key=value`` strings; values are read as YAML scalars or lists (``true``, ``3``, ``[1, 2]``)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form key=value")
        try:
            out[key.strip()] = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
    return out


def _coerce(value: Any, tp: Any, where: str, source: str = "config", prefix: str = "") -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if isinstance(value, tp):
            return value
        return config_from_dict(tp, value if value is not None else {}, source=source, prefix=prefix)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg, where, source, prefix)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if errors else f"{where}: cannot be {value!r}")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            value = [value] if isinstance(value, (int, float, str)) and origin is list else value
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{where}[{i}]", source, f"{prefix[:-1]}[{i}].") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            valid = ", ".join(repr(m.value) for m in tp)
            raise ConfigError(f"{where}: {value!r} is not one of {valid}") from None
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            num = tp(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}"[:300]) from None
        if tp is int and isinstance(value, float) and value != int(value):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return num
    if tp is str:
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if tp is Path:
        return Path(value)
    return value


def config_from_dict(
    cls: type[T], data: Mapping[str, Any], *, overrides: Sequence[str] | Mapping[str, Any] = (), source: str = "config",
    prefix: str = "",
) -> T:
    """Build the dataclass ``cls`` from a mapping plus overrides, checking every key, nested ones too.

    Fields typed as dataclasses (or lists of them) are built field by field from nested mappings; an unknown nested
    key is named by its dotted path (``outputs.seg.wirte``). Overrides reach nested fields with dotted keys
    (``outputs.seg.type=labelmap``).

    Args:
        cls: the config dataclass.
        data: the YAML mapping.
        overrides: ``key=value`` strings (or an already parsed mapping).
        source: the file or place the data comes from, named first in every error.
        prefix: dotted path of ``data`` inside the file (for nested sections).

    Raises:
        ConfigError: unknown key, or a value of the wrong type, naming the key and ``source``.

    Example:
        >>> from medkd.methods.bcp.config import BCPConfig
        >>> config_from_dict(BCPConfig, {"lr": "0.1"}, overrides=["seed=2"]).seed
        2
        >>> config_from_dict(BCPConfig, {"lr_": 0.1}, source="p.yaml")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        medkd.errors.ConfigError: p.yaml: unknown config key 'lr_'. Did you mean 'lr', 'lr_step'? Valid keys: ...
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: {f'key {prefix[:-1]!r}' if prefix else 'the config'}: expected a mapping, "
                          f"got {_short(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    merged = dict(data)
    extra = parse_overrides(overrides) if not isinstance(overrides, Mapping) else dict(overrides)
    for key in list(merged) + list(extra):
        if not isinstance(key, str):
            raise ConfigError(f"{source}: config keys must be names, got {_short(key)}")
    for key, value in extra.items():
        head, dot, rest = key.partition(".")
        if dot and head in fields and _dataclass_of(hints[head]) is not None:
            nested = merged.get(head)
            nested = dict(nested) if isinstance(nested, Mapping) else {}
            nested[rest] = value
            merged[head] = _nest(nested)
        else:
            merged[key] = value
    for key in merged:
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=3)
            hint = f" Did you mean {', '.join(repr(prefix + c) for c in close)}?" if close else ""
            raise ConfigError(
                f"{source}: unknown config key {prefix + key!r}.{hint} Valid keys: {', '.join(sorted(fields))}"
            )
    kwargs = {
        k: _coerce(v, hints[k], f"{source}: key {prefix + k!r}", source, f"{prefix}{k}.") for k, v in merged.items()
    }
    try:
        return cls(**kwargs)
    except ConfigError as err:
        raise ConfigError(f"{source}: {err}") from None
    except TypeError as err:  # a required field is missing
        raise ConfigError(f"{source}: {err}") from None


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"a.b": 1, "c": 2}`` -> ``{"a": {"b": 1}, "c": 2}`` (dotted keys of overrides into nested mappings)."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        head, dot, rest = key.partition(".")
        if dot:
            inner = out.get(head)
            inner = dict(inner) if isinstance(inner, Mapping) else {}
            inner[rest] = value
            out[head] = _nest(inner)
        else:
            out[key] = value
    return out


def _dataclass_of(tp: Any) -> type | None:
    """The dataclass ``tp`` names (also through ``X | None``), else ``None``."""
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return tp
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(tp) if dataclasses.is_dataclass(a)]
        return found[0] if len(found) == 1 else None
    return None


def _short(value: Any, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def load_config(cls: type[T], path: str | Path, overrides: Sequence[str] = ()) -> T:
    """Read a YAML preset with ``yaml.safe_load`` and build ``cls`` from it plus ``key=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of key: value at the top level")
    return config_from_dict(cls, data, overrides=overrides, source=str(path))


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-Python dict of a config dataclass (tuples as lists, enums as values), for YAML/JSON/checkpoints."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return config_to_dict(v)
        if isinstance(v, Enum):
            return v.value
        if isinstance(v, (tuple, list)):
            return [plain(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return {f.name: plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
