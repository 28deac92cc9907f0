# SPDX-License-Identifier: Apache-2.0
"""Typed configs: nested sections and lists of them are checked field by field; dotted overrides reach them."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import yaml

from medkd.config import config_from_dict, config_to_dict, load_config
from medkd.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class Seg:
    enabled: bool = True
    type: str = "binary"

    def __post_init__(self) -> None:
        if self.type not in ("binary", "labelmap"):
            raise ConfigError(f"type must be binary or labelmap, got {self.type!r}")


@dataclass(frozen=True, kw_only=True)
class Rule:
    name: str
    min_slices: int = 1


@dataclass(frozen=True, kw_only=True)
class Outputs:
    seg: Seg = field(default_factory=Seg)
    nifti: bool = True


@dataclass(frozen=True, kw_only=True)
class Pipe:
    name: str = "p"
    outputs: Outputs = field(default_factory=Outputs)
    rules: list[Rule] = field(default_factory=list)
    extra: Seg | None = None


def test_nested_sections_are_built_from_mappings():
    cfg = config_from_dict(Pipe, {"outputs": {"seg": {"type": "labelmap"}}, "rules": [{"name": "ct"}]})
    assert cfg.outputs == Outputs(seg=Seg(type="labelmap")) and cfg.rules == [Rule(name="ct")]
    assert cfg.extra is None and config_from_dict(Pipe, {"extra": {}}).extra == Seg()


@pytest.mark.parametrize(
    "data, dotted",
    [({"outputs": {"seg": {"tpye": "binary"}}}, "outputs.seg.tpye"), ({"outputs": {"nifit": True}}, "outputs.nifit"),
     ({"rules": [{"name": "a"}, {"name": "b", "min_slice": 3}]}, "rules[1].min_slice")],
)
def test_unknown_nested_key_names_its_dotted_path_and_the_file(tmp_path, data, dotted):
    path = tmp_path / "pipe.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_config(Pipe, path)
    assert str(path) in str(err.value) and repr(dotted) in str(err.value)


def test_close_matches_are_suggested_with_their_path():
    with pytest.raises(ConfigError, match=r"Did you mean 'outputs.seg.type'"):
        config_from_dict(Pipe, {"outputs": {"seg": {"tpye": "x"}}})


@pytest.mark.parametrize(
    "data, problem",
    [({"outputs": 3}, "expected a mapping"), ({"outputs": {"seg": {"type": "rle"}}}, "binary or labelmap"),
     ({"rules": [{"min_slices": 2}]}, "name"), ({"rules": [{"name": "a", "min_slices": "x"}]}, "min_slices")],
)
def test_bad_nested_values_are_config_errors(data, problem):
    with pytest.raises(ConfigError, match=problem):
        config_from_dict(Pipe, data, source="pipe.yaml")


def test_dotted_overrides_reach_nested_fields_and_keep_the_rest():
    cfg = config_from_dict(Pipe, {"outputs": {"nifti": False}}, overrides=["outputs.seg.type=labelmap"])
    assert cfg.outputs == Outputs(seg=Seg(type="labelmap"), nifti=False)
    cfg = config_from_dict(Pipe, {}, overrides=["outputs.seg.enabled=false", "outputs.seg.type=labelmap"])
    assert cfg.outputs.seg == Seg(enabled=False, type="labelmap")
    with pytest.raises(ConfigError, match="'outputs.seg.colour'"):
        config_from_dict(Pipe, {}, overrides=["outputs.seg.colour=red"])


def test_nested_configs_round_trip_through_plain_dicts():
    cfg = config_from_dict(Pipe, {"outputs": {"seg": {"type": "labelmap"}}, "rules": [{"name": "ct", "min_slices": 3}]})
    plain = config_to_dict(cfg)
    assert plain["outputs"] == {"seg": {"enabled": True, "type": "labelmap"}, "nifti": True}
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain and config_from_dict(Pipe, plain) == cfg
