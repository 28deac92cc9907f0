# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

from pathlib import Path

import pytest

from medkd.config import load_config
from medkd.errors import ConfigError
from medkd.methods.bcp.config import BCPConfig

APPS = Path(__file__).resolve().parents[3] / "apps" / "bcp"
PRESETS = sorted(APPS.glob("*.yaml"))


def test_all_presets_named_by_the_issue_exist():
    names = {p.name for p in PRESETS}
    assert {"acdc_5pct.yaml", "acdc_10pct.yaml", "la_5pct.yaml", "la_10pct.yaml", "cpu_2d.yaml", "cpu_3d.yaml"} <= names


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_load_and_use_registered_nets(preset):
    from medkd.nets import list_nets

    cfg = load_config(BCPConfig, preset)
    assert cfg.net in list_nets()
    assert len(cfg.patch) == cfg.spatial_dims


@pytest.mark.parametrize(
    "preset, expected",
    [
        ("acdc_5pct.yaml", dict(labeled=3, batch_size=24, labeled_batch_size=12, pretrain_iterations=10000,
                                selftrain_iterations=30000, patch=(256, 256), seed=1337)),
        ("acdc_10pct.yaml", dict(labeled=7)),
        ("la_5pct.yaml", dict(labeled=4, batch_size=8, pretrain_iterations=2000, selftrain_iterations=15000,
                              lr_step=2500, patch=(112, 112, 80))),
        ("la_10pct.yaml", dict(labeled=8)),
    ],
)
def test_paper_presets_have_the_paper_defaults(preset, expected):
    cfg = load_config(BCPConfig, APPS / preset)
    for key, value in expected.items():
        assert getattr(cfg, key) == value, key
    assert cfg.lr == 0.01 and cfg.ema_decay == 0.99 and cfg.u_weight == 0.5
    assert cfg.mask_ratio == pytest.approx(2 / 3)


def test_unknown_key_names_key_file_and_valid_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("dataset: acdc\nlabelled: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(BCPConfig, bad)
    msg = str(err.value)
    assert "labelled" in msg and str(bad) in msg and "labeled" in msg and "Valid keys" in msg


@pytest.mark.parametrize(
    "override, match",
    [
        ("seed=abc", "expected int"),
        ("method=semi", "not one of"),
        ("patch=[64, 64, 64]", "must have 2 values"),
        ("labeled=0", "at least 1"),
        ("nosuchkey=1", "unknown config key"),
        ("faithful", "key=value"),
    ],
)
def test_bad_overrides(override, match):
    with pytest.raises(ConfigError, match=match):
        load_config(BCPConfig, APPS / "cpu_2d.yaml", [override])


def test_overrides_are_typed():
    cfg = load_config(BCPConfig, APPS / "cpu_2d.yaml", ["seed=2", "method=supervised", "faithful=true", "patch=[64, 64]"])
    assert cfg.seed == 2 and cfg.method.value == "supervised" and cfg.faithful is True and cfg.patch == (64, 64)


@pytest.mark.parametrize(
    "kwargs, ema, policy, val, teacher_train, restore",
    [
        (dict(dataset="acdc"), "state_dict", "worst", "val", True, True),
        (dict(dataset="acdc", teacher_train_mode="false"), "state_dict", "worst", "val", False, True),
        (dict(dataset="acdc", faithful=True), "state_dict", "bcp_zero", "val", True, True),
        (dict(dataset="la", patch=(112, 112, 80), num_classes=2), "state_dict", "worst", "train_tail", True, False),
        (dict(dataset="la", patch=(112, 112, 80), num_classes=2, faithful=True), "params", "bcp_zero", "test", True, False),
    ],
)
def test_faithful_and_clean_resolution(kwargs, ema, policy, val, teacher_train, restore):
    from medkd.config import config_from_dict

    cfg = config_from_dict(BCPConfig, kwargs)
    assert cfg.resolved_ema_mode() == ema
    assert cfg.resolved_empty_policy() == policy
    assert cfg.resolved_val_split() == val
    assert cfg.resolved_teacher_train_mode() is teacher_train
    assert cfg.resolved_restore_optimizer() is restore


def test_faithful_la_needs_the_reference_patch():
    from medkd.config import config_from_dict

    with pytest.raises(ConfigError, match="112x112x80"):
        config_from_dict(BCPConfig, dict(dataset="la", patch=(32, 32, 32), faithful=True))
