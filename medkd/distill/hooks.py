# SPDX-License-Identifier: Apache-2.0
"""Feature taps: forward hooks on modules named by their dotted ``named_modules()`` path, no model surgery.

:class:`FeatureTap` hooks the named modules of a network; after each forward, :attr:`FeatureTap.features` holds
``{"feat:<name>": tensor}`` (the module's output, or its first input with ``io="input"``). A teacher's taps are
detached. Unknown names fail with close matches; :func:`list_modules` prints the names and output shapes to choose
from (``medkd distill list-modules --net NAME``). Tap before ``torch.compile``: FX-traced extractors bypass hooks.

Example:
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten())
    >>> with FeatureTap(net, ["1"]) as tap:
    ...     _ = net(torch.randn(2, 1, 5, 5))
    ...     tap.features["feat:1"].shape
    torch.Size([2, 4, 3, 3])
    >>> len(net[1]._forward_hooks)  # removed on exit
    0
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from medkd.errors import ConfigError

__all__ = ["FEAT_PREFIX", "FeatureTap", "list_modules", "tap_key"]

#: prefix of feature-tap keys in the output dicts the loss plugins read
FEAT_PREFIX = "feat:"


def tap_key(name: str) -> str:
    """``"feat:<name>"``, the output-dict key of a tapped module."""
    return f"{FEAT_PREFIX}{name}"


def _first_tensor(value: Any) -> Tensor:
    if isinstance(value, Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], Tensor):
        return value[0]
    if isinstance(value, dict):
        for item in value.values():
            if isinstance(item, Tensor):
                return item
    raise TypeError(f"cannot tap a module whose output is {type(value).__name__}")


class FeatureTap:
    """Hooks on named modules; use as a context manager or call :meth:`remove`.

    Args:
        model: the network (taps address ``model.named_modules()``; a wrapped model such as
            :class:`~medkd.engine.teachers.FrozenTeacher` is looked into through its ``module`` attribute).
        names: dotted module names, e.g. ``["encoder.layer3"]``.
        io: ``"output"`` (default) or ``"input"`` (the module's first positional input).
        detach: detach the tapped tensors (teachers).
        what: ``"student"``/``"teacher"``, for error messages.

    Raises:
        ConfigError: a name that is not a module of ``model`` (close matches listed).
    """

    def __init__(self, model: nn.Module, names: Sequence[str], *, io: str = "output", detach: bool = False,
                 what: str = "network") -> None:
        if io not in ("output", "input"):
            raise ConfigError(f"FeatureTap io must be 'output' or 'input', got {io!r}")
        modules = dict(model.named_modules())
        if "module" in modules and not any(n in modules for n in names):  # a wrapper (FrozenTeacher, DDP)
            modules = dict(model.module.named_modules())  # type: ignore[union-attr]
        self.features: dict[str, Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.detach = detach
        for name in names:
            if name not in modules or name == "":
                close = difflib.get_close_matches(name, [n for n in modules if n], n=3)
                hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
                raise ConfigError(f"{what} has no module {name!r} to tap.{hint} "
                                  "List them with: medkd distill list-modules --net NAME")
            module = modules[name]
            if io == "output":
                self._handles.append(module.register_forward_hook(self._output_hook(name)))
            else:
                self._handles.append(module.register_forward_pre_hook(self._input_hook(name)))
        self.names = tuple(names)

    def _store(self, name: str, value: Any) -> None:
        tensor = _first_tensor(value)
        self.features[tap_key(name)] = tensor.detach() if self.detach else tensor

    def _output_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any, output: Any) -> None:
            self._store(name, output)
        return hook

    def _input_hook(self, name: str) -> Any:
        def hook(module: nn.Module, args: Any) -> None:
            self._store(name, args)
        return hook

    def pop(self) -> dict[str, Tensor]:
        """The features of the last forward, and forget them."""
        out, self.features = self.features, {}
        return out

    def remove(self) -> None:
        """Remove every hook (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.features = {}

    def __enter__(self) -> FeatureTap:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.remove()


def list_modules(model: nn.Module, example: Tensor | None = None) -> list[tuple[str, str, tuple[int, ...] | None]]:
    """``(name, type, output shape)`` of every named submodule; shapes from one forward of ``example`` (else None).

    Example:
        >>> rows = list_modules(nn.Sequential(nn.Linear(3, 2), nn.ReLU()), torch.zeros(1, 3))
        >>> rows[0]
        ('0', 'Linear', (1, 2))
    """
    names = [(n, m) for n, m in model.named_modules() if n]
    shapes: dict[str, tuple[int, ...]] = {}
    if example is not None:
        handles = []
        for name, module in names:
            def hook(module: nn.Module, args: Any, output: Any, name: str = name) -> None:
                try:
                    shapes.setdefault(name, tuple(_first_tensor(output).shape))
                except TypeError:
                    pass
            handles.append(module.register_forward_hook(hook))
        try:
            was_training = model.training
            model.eval()
            with torch.no_grad():
                model(example)
            model.train(was_training)
        finally:
            for h in handles:
                h.remove()
    return [(name, type(module).__name__, shapes.get(name)) for name, module in names]
