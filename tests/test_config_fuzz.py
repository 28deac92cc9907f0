# SPDX-License-Identifier: Apache-2.0
"""Property tests for config parsing: any YAML, any ``--set`` override, gives a config or a ConfigError.

Never another exception (a traceback for the user), and every config that is accepted is usable: its numbers are
finite and in range, and it survives a round trip through ``config_to_dict``.
"""

from __future__ import annotations

import dataclasses
import math
import string
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medkd.config import config_from_dict, config_to_dict, load_config, parse_overrides
from medkd.engine.batch import PipelineConfig
from medkd.errors import ConfigError
from medkd.methods.bcp.config import BCPConfig

APPS = Path(__file__).resolve().parents[1] / "apps" / "bcp"
PRESETS = sorted(APPS.glob("*.yaml"))
CONFIGS = (BCPConfig, PipelineConfig)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "0", "-1", "true", "auto", "cpu", "cuda", "tpu", "acdc", "la",
                     "bcp", "supervised", "[0, 0]", "{}", "~", "binary", "labelmap"]),
)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                                           max_size=3), max_leaves=8)


def _keys(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def _mapping(cls: type) -> st.SearchStrategy[dict]:
    return st.dictionaries(st.sampled_from(_keys(cls)) | st.text(max_size=8), values, max_size=5)


def _usable(cfg: object) -> None:
    """An accepted config has finite numbers and rebuilds to itself."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        items = value if isinstance(value, tuple) else (value,)
        for item in items:
            if isinstance(item, float):
                assert math.isfinite(item), f"{f.name}={item} accepted"
    assert config_from_dict(type(cfg), config_to_dict(cfg)) == cfg


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_any_mapping_gives_a_config_or_a_config_error(cls):
    @FUZZ
    @given(data=_mapping(cls))
    def check(data: dict) -> None:
        try:
            cfg = config_from_dict(cls, data, source="fuzz.yaml")
        except ConfigError as err:
            assert "fuzz.yaml" in str(err)
            return
        _usable(cfg)

    check()


@pytest.mark.parametrize("cls", CONFIGS, ids=lambda c: c.__name__)
def test_any_override_string_gives_a_config_or_a_config_error(cls):
    chars = string.printable

    @FUZZ
    @given(key=st.sampled_from(_keys(cls)) | st.text(chars, max_size=6), raw=st.text(chars, max_size=20))
    def check(key: str, raw: str) -> None:
        try:
            cfg = config_from_dict(cls, {}, overrides=[f"{key}={raw}"], source="fuzz")
        except ConfigError:
            return
        _usable(cfg)

    check()


def test_any_yaml_text_gives_a_config_or_a_config_error(tmp_path):
    @settings(max_examples=100, deadline=None)
    @given(text=st.text(max_size=60) | values.map(lambda v: yaml.safe_dump(v, default_flow_style=True)))
    def check(text: str) -> None:
        path = tmp_path / "preset.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            load_config(BCPConfig, path)
        except ConfigError as err:
            assert str(path) in str(err)

    check()


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_one_bad_value_in_a_shipped_preset_is_named(preset):
    """Each preset with one field replaced by a hostile value: a config or an error naming that key."""
    base = yaml.safe_load(preset.read_text())

    @settings(max_examples=40, deadline=None)
    @given(key=st.sampled_from(sorted(base)), value=values)
    def check(key: str, value: object) -> None:
        try:
            cfg = config_from_dict(BCPConfig, {**base, key: value}, source=str(preset))
        except ConfigError as err:
            assert str(preset) in str(err)
            return
        _usable(cfg)

    check()


@pytest.mark.parametrize(
    "override, key",
    [("lr=nan", "lr"), ("lr=.inf", "lr"), ("lr=-0.1", "lr"), ("lr=0", "lr"), ("patch=[0, 0]", "patch"),
     ("patch=[-5, 64]", "patch"), ("num_classes=0", "num_classes"), ("num_classes=1", "num_classes"),
     ("in_channels=0", "in_channels"), ("momentum=-1", "momentum"), ("weight_decay=-1", "weight_decay"),
     ("eval_batch_size=0", "eval_batch_size"), ("num_workers=-1", "num_workers"), ("seed=-1", "seed"),
     ("u_weight=nan", "u_weight"), ("lr_gamma=0", "lr_gamma"), ("patch=[100000, 100000]", "patch"),
     ("precision=fp8", "precision"), ("grad_accum_steps=0", "grad_accum_steps")],
)
def test_out_of_range_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key):
        config_from_dict(BCPConfig, yaml.safe_load((APPS / "cpu_2d.yaml").read_text()), overrides=[override])


def test_huge_integer_for_a_float_key_is_a_config_error():
    with pytest.raises(ConfigError, match="lr"):
        config_from_dict(BCPConfig, {"lr": 10**400})


def test_parse_overrides_never_raises_anything_but_config_error():
    @settings(max_examples=200, deadline=None)
    @given(items=st.lists(st.text(max_size=20), max_size=4))
    def check(items: list[str]) -> None:
        try:
            parsed = parse_overrides(items)
        except ConfigError:
            return
        assert len(parsed) <= len(items)

    check()
