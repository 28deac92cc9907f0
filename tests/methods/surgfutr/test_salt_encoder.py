# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's SALT-pretrainable frame encoder: ``salt_frames`` (task video_encoder), ``model.encoder_params`` and
``model.encoder_weights`` (a SALT run's ``RUN/salt/student.pt``), and the errors for a bad weights file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from medkd.config import config_from_dict
from medkd.distill.strategies.salt import _save
from medkd.errors import ConfigError
from medkd.methods.surgfutr.config import SurgFUTRConfig
from medkd.methods.surgfutr.model import Student, build_encoder
from medkd.methods.surgfutr.modules import HeadLayout
from medkd.nets import create_net, list_nets
from medkd.nets.token_vit import TokenEncoder

#: a tiny per-frame ViT: 16x16 frames, 8x8 patches (4 tokens), width 8, one block
ENC = {"patch": 8, "dim": 8, "depth": 1, "heads": 2}
FRAME = [16, 16]


def _cfg(**model: Any) -> SurgFUTRConfig:
    base = {"encoder": "salt_frames", "encoder_params": dict(ENC), "feature_dim": 16, "state_dim": 8, "heads": 2,
            "width": 4, "prototypes": 4, "window": 2, "clip_frames": 2}
    return config_from_dict(SurgFUTRConfig, {"data": {"frame_size": FRAME}, "model": {**base, **model}})


def _salt_run(tmp_path: Path, in_channels: int = 3, **params: Any) -> tuple[Path, TokenEncoder]:
    """A SALT run folder whose ``salt/student.pt`` is written as the strategy writes it (``salt._save``)."""
    torch.manual_seed(1)
    kwargs = {**ENC, "image_size": FRAME, **params}
    encoder = TokenEncoder(in_channels, spatial_dims=2, **kwargs)
    (tmp_path / "salt").mkdir(parents=True)
    _save(tmp_path / "salt" / "student.pt", {"encoder": encoder.state_dict(), "predictor": {}, "losses": [0.5, 0.25],
                                             "net_params": kwargs})
    return tmp_path, encoder


def test_salt_frames_is_a_video_encoder_with_surgfutr_shapes() -> None:
    assert "salt_frames" in list_nets(task="video_encoder")
    net = create_net("salt_frames", in_channels=3, feature_dim=16, image_size=FRAME, **ENC)
    clip = torch.randint(0, 255, (2, 3, 3, *FRAME), dtype=torch.uint8)
    assert tuple(net(clip).shape) == (2, 3, 16)
    # inside SurgFUTR: window frames (B, L, T, 3, H, W) -> per-frame features (B, L, T, feature_dim)
    student = Student(_cfg(), HeadLayout(3, 2, 0, (1,), (), (2.0,)))
    frames = torch.randint(0, 255, (2, 2, 2, 3, *FRAME), dtype=torch.uint8)
    assert tuple(student.frame_features(frames).shape) == (2, 2, 2, 16)
    assert tuple(student(frames, torch.zeros(2))["presence"].shape) == (2, 1, 2)


@pytest.mark.parametrize("which", ["run", "salt_folder", "file"])
def test_salt_weights_load_into_the_frame_encoder(tmp_path: Path, which: str) -> None:
    run, saved = _salt_run(tmp_path)
    path = {"run": run, "salt_folder": run / "salt", "file": run / "salt" / "student.pt"}[which]
    net = build_encoder(_cfg(encoder_weights=str(path)))
    loaded = net.encoder.state_dict()
    assert set(loaded) == set(saved.state_dict())
    for key, value in saved.state_dict().items():
        torch.testing.assert_close(loaded[key], value, rtol=0, atol=0)
    fresh = build_encoder(_cfg())
    assert not torch.equal(fresh.encoder.patch_embed.weight, saved.patch_embed.weight)


def test_salt_weights_learned_positions_and_encoder_params(tmp_path: Path) -> None:
    run, saved = _salt_run(tmp_path, pos_embed="learned")
    net = build_encoder(_cfg(encoder_params={**ENC, "pos_embed": "learned"}, encoder_weights=str(run)))
    torch.testing.assert_close(net.encoder.pos_embed, saved.pos_embed, rtol=0, atol=0)


def _bytes(path: Path) -> Path:
    path.write_bytes(b"\x00not a torch file\xff" * 10)
    return path


def _wrong_keys(path: Path) -> Path:
    torch.save({"student": {"w": torch.zeros(2)}}, path)
    return path


@pytest.mark.parametrize("make, words", [
    (_bytes, "not a readable torch weights file"),
    (_wrong_keys, "not a SALT encoder file"),
    (lambda p: p.parent / "nothing_here.pt", "no such file or folder"),
])
def test_bad_weights_file_is_a_config_error_naming_it(tmp_path: Path, make: Any, words: str) -> None:
    path = make(tmp_path / "student.pt")
    with pytest.raises(ConfigError, match=words) as err:
        build_encoder(_cfg(encoder_weights=str(path)))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("params, in_channels, words", [
    ({"dim": 16}, 3, "shape mismatches: .*linear1.bias \\(64,\\) in the file vs \\(32,\\).*more.*'dim': 16"),
    ({"pos_embed": "learned"}, 3, "unexpected keys \\[pos_embed\\]"),
    ({}, 1, "pretrained on 1-channel images.*data.in_channels: 3"),
])
def test_weights_that_do_not_fit_name_the_file_and_keys(tmp_path: Path, params: dict[str, Any], in_channels: int,
                                                        words: str) -> None:
    run, _ = _salt_run(tmp_path, in_channels=in_channels, **params)
    with pytest.raises(ConfigError, match=words) as err:
        build_encoder(_cfg(encoder_weights=str(run)))
    assert str(run / "salt" / "student.pt") in str(err.value)


def test_empty_run_folder_and_config_checks(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="salt/student.pt"):
        build_encoder(_cfg(encoder_weights=str(tmp_path)))
    with pytest.raises(ConfigError, match="encoder_params"):
        config_from_dict(SurgFUTRConfig, {"model": {"encoder": "cnn", "encoder_params": {"dim": 8}}})
    with pytest.raises(ConfigError, match="feature_dim"):
        _cfg(encoder_params={**ENC, "feature_dim": 4})
    with pytest.raises(ConfigError, match="model.encoder 'salt_frames'"):
        build_encoder(_cfg(encoder_params={**ENC, "heads": 3}))
    run, _ = _salt_run(tmp_path / "run")
    with pytest.raises(ConfigError, match="no 'encoder' submodule"):
        build_encoder(_cfg(encoder="surgfutr_cnn", encoder_params={}, encoder_weights=str(run)))


def test_bundle_network_def_keeps_the_frame_size_and_drops_the_weights_file(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from medkd.methods.surgfutr.bundle import _kwargs, surgfutr_forecaster

    run, _ = _salt_run(tmp_path)
    cfg = _cfg(encoder_weights=str(run))
    layout = HeadLayout(3, 2, 0, (1,), (), (2.0,))
    kwargs = _kwargs(cfg, SimpleNamespace(layout=layout))
    assert kwargs["model"]["encoder_weights"] == ""
    assert kwargs["model"]["encoder_params"] == {**ENC, "image_size": FRAME}
    (run / "salt" / "student.pt").unlink()  # a bundle is rebuilt without the SALT run
    network = surgfutr_forecaster(**kwargs)
    assert network.student.encoder.encoder.input_shape == tuple(FRAME)


def test_salt_pretrained_on_rgb_images_initialises_the_surgfutr_encoder(tmp_path: Path) -> None:
    """A tiny SALT run on 3-channel images (data.in_channels: 3), then its student encoder as SurgFUTR's."""
    from PIL import Image

    from medkd import api
    from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d

    root = write_synth_lesion_2d(tmp_path / "data", n_teacher_train=1, n_train=8, n_val=4, n_test=4,
                                 n_unlabelled=2, size=16)
    for png in Path(root).rglob("*.png"):
        Image.open(png).convert("RGB").save(png)
    preset = Path(__file__).resolve().parents[3] / "apps" / "distill" / "synth_lesion_salt.yaml"
    api.distill_run(preset, root, tmp_path / "salt_run", progress=False, overrides=[
        "data.in_channels=3", "data.image_size=[16, 16]", "data.batch_size=4", "optim.iterations=2",
        "eval.val_interval=2", "eval.log_interval=2", "student.net_params={dim: 8, depth: 1, heads: 2, patch: 4}",
        "distill.strategy_params={teacher_iterations: 2, student_iterations: 2, predictor_depth: 1, "
        "predictor_width: 8, predictor_heads: 2, decoder_depth: 1, random_baseline: false}"])
    saved = torch.load(tmp_path / "salt_run" / "salt" / "student.pt", weights_only=True)["encoder"]
    assert saved["patch_embed.weight"].shape[1] == 3
    net = build_encoder(_cfg(encoder_params={**ENC, "patch": 4}, encoder_weights=str(tmp_path / "salt_run")))
    assert all(torch.equal(net.encoder.state_dict()[k], v) for k, v in saved.items())
