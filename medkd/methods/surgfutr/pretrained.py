# SPDX-License-Identifier: Apache-2.0
"""SALT-pretrained weights for SurgFUTR's frame encoder (``model.encoder_weights``).

The ``salt`` distillation strategy (:mod:`medkd.distill.strategies.salt`) saves its trained encoders in
``RUN/salt/student.pt`` (and ``teacher.pt``): a dict with ``encoder`` (a
:class:`~medkd.nets.token_vit.TokenEncoder` state dict), ``net_params`` (its ``salt_vit`` keywords), ``losses`` and
the predictor's or decoder's weights. :func:`load_salt_encoder` reads ``encoder`` (``torch.load`` with
``weights_only=True``) into the ``encoder`` of a frame encoder such as ``salt_frames``.

Example:
    >>> import tempfile, torch
    >>> from pathlib import Path
    >>> from medkd.nets import create_net
    >>> net = create_net("salt_frames", feature_dim=8, image_size=8, dim=8, depth=1, heads=2)
    >>> run = Path(tempfile.mkdtemp())
    >>> (run / "salt").mkdir()
    >>> torch.save({"encoder": net.encoder.state_dict(), "net_params": {"dim": 8}}, run / "salt" / "student.pt")
    >>> load_salt_encoder(net, run).name
    'student.pt'
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from medkd.errors import ConfigError

__all__ = ["load_salt_encoder", "read_salt_encoder", "salt_encoder_file"]

#: where the salt strategy saves the trained student encoder under its run folder
_STUDENT = ("salt", "student.pt")


def _few(items: list[str], limit: int = 6) -> str:
    """``items`` as ``[a, b, ...] (+N more)``, at most ``limit`` of them."""
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return f"[{', '.join(items[:limit])}]{more}"


def salt_encoder_file(path: str | Path) -> Path:
    """The SALT encoder file ``path`` names: the file itself, or ``RUN/salt/student.pt`` of a run folder ``RUN``
    (or ``student.pt`` of the ``RUN/salt`` folder).

    Raises:
        ConfigError: nothing there, naming the paths tried.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if path.is_dir():
        for candidate in (path.joinpath(*_STUDENT), path / _STUDENT[1]):
            if candidate.is_file():
                return candidate
        raise ConfigError(f"model.encoder_weights {str(path)!r}: a folder without {Path(*_STUDENT)} or "
                          f"{_STUDENT[1]}; pretrain with the distill strategy 'salt' first")
    raise ConfigError(f"model.encoder_weights {str(path)!r}: no such file or folder")


def read_salt_encoder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any], Path]:
    """The encoder state dict, the ``net_params`` and the file of a SALT payload (see the module docstring).

    Raises:
        ConfigError: a missing file, one ``torch.load(..., weights_only=True)`` cannot read, or not a SALT payload
            (no ``encoder`` dict of tensors); the message names the file.
    """
    file = salt_encoder_file(path)
    try:
        payload = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001  (torch raises many kinds for a corrupt or unsafe file)
        raise ConfigError(f"model.encoder_weights {str(file)!r}: not a readable torch weights file "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})"[:400]) from None
    state = payload.get("encoder") if isinstance(payload, dict) else None
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        keys = sorted(payload)[:8] if isinstance(payload, dict) else type(payload).__name__
        raise ConfigError(f"model.encoder_weights {str(file)!r}: not a SALT encoder file (expected a dict with an "
                          f"'encoder' state dict, as RUN/salt/student.pt; found {keys})")
    params = payload.get("net_params")
    return state, dict(params) if isinstance(params, dict) else {}, file


def load_salt_encoder(net: nn.Module, path: str | Path) -> Path:
    """Load a SALT encoder (``path``: a file or a SALT run folder) into ``net.encoder``; returns the file read.

    Raises:
        ConfigError: a bad file (see :func:`read_salt_encoder`), a ``net`` without an ``encoder`` submodule, or
            weights that do not fit it: the message names the file, the missing, unexpected and mismatching keys
            (with both shapes) and the ``net_params`` SALT trained with (set ``model.encoder_params`` to match).
    """
    state, params, file = read_salt_encoder(path)
    target = getattr(net, "encoder", None)
    if not isinstance(target, nn.Module):
        raise ConfigError(f"model.encoder_weights {str(file)!r}: the frame encoder {type(net).__name__} has no "
                          f"'encoder' submodule to load a SALT encoder into (use model.encoder: salt_frames)")
    own = target.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = [f"{k} {tuple(state[k].shape)} in the file vs {tuple(own[k].shape)}"
                  for k in sorted(set(own) & set(state)) if state[k].shape != own[k].shape]
    if missing or unexpected or mismatched:
        found = "; ".join(part for part in (f"missing keys {_few(missing)}" if missing else "",
                                            f"unexpected keys {_few(unexpected)}" if unexpected else "",
                                            f"shape mismatches: {_few(mismatched)}" if mismatched else "") if part)
        hint = {k: v for k, v in params.items() if k not in ("in_channels", "num_classes", "spatial_dims",
                                                               "head_norm")}
        clip = " (a clip encoder: salt_frames takes a 2-D, per-frame one)" if "frames" in params else ""
        embed = "patch_embed.weight"
        if embed in state and embed in own and state[embed].ndim > 1 and state[embed].shape[1] != own[embed].shape[1]:
            clip += (f" (pretrained on {state[embed].shape[1]}-channel images; frames have {own[embed].shape[1]}: "
                     f"pretrain with data.in_channels: {own[embed].shape[1]})")
        raise ConfigError(f"model.encoder_weights {str(file)!r}: the SALT encoder does not fit the frame encoder: "
                          f"{found}. SALT trained it with net_params {hint}{clip}; set model.encoder_params to match "
                          f"(and data.frame_size to its image_size)")
    target.load_state_dict(state)
    return file
