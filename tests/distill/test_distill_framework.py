# SPDX-License-Identifier: Apache-2.0
"""The distillation framework: registry, create_loss, Requires, weighted terms and ramps, feature taps, cache."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from medkd.distill import (
    PluginKind,
    RequirementError,
    Requires,
    create_loss,
    get_plugin,
    list_plugins,
    loss_parameters,
    plugin_kind,
)
from medkd.distill.cache import TeacherCache, teacher_fingerprint
from medkd.distill.hooks import FeatureTap, list_modules
from medkd.distill.terms import TermSpec, WeightedTerms, ramp_factor
from medkd.errors import ConfigError, DataError

ISSUE_LOSSES = {"kd", "dkd", "pld", "bpkd", "ofa", "tgeo", "margin_mse", "ff_g2m", "prokd", "leaf"}


def test_every_loss_of_the_issue_is_registered_as_a_loss() -> None:
    losses = {p.key for p in list_plugins(kind="loss")}
    assert ISSUE_LOSSES <= losses
    assert all(plugin_kind(k) is PluginKind.LOSS for k in ISSUE_LOSSES)
    rows = list_plugins()
    assert all(r.distribution == "medkd" and r.summary for r in rows if r.key in ISSUE_LOSSES)


@pytest.mark.parametrize(("name", "params", "match"), [
    ("kdd", {}, "Did you mean 'kd'"),
    ("kd", {"temprature": 2.0}, "Did you mean 'temperature'"),
    ("kd", {"temperature": 0.0}, "temperature must be > 0"),
    ("dkd", {"warmup": -1}, "warmup"),
])
def test_create_loss_rejects_unknown_names_parameters_and_values(name: str, params: dict, match: str) -> None:
    with pytest.raises((KeyError, ConfigError), match=match):
        create_loss(name, **params)


def test_a_loss_key_is_not_a_strategy() -> None:
    with pytest.raises(KeyError, match="'kd' is a loss plugin"):
        get_plugin("kd", kind="strategy")


def test_loss_parameters_lists_defaults() -> None:
    assert loss_parameters("dkd")["beta"] == 8.0 and loss_parameters("kd")["temperature"] == 4.0


@pytest.mark.parametrize(("requires", "student", "teacher", "batch", "missing"), [
    (Requires(), {"logits"}, {"logits"}, set(), []),
    (Requires(batch=("label",)), {"logits"}, {"logits"}, set(), ["batch key 'label'"]),
    (Requires(student=("logits", "feat:*")), {"logits"}, {"logits"}, set(), ["student output 'feat:*'"]),
    (Requires(student=("logits", "feat:*")), {"logits", "feat:enc"}, {"logits"}, set(), []),
    (Requires(teacher=("feat:enc.2",)), {"logits"}, {"logits"}, set(), ["teacher output 'feat:enc.2'"]),
])
def test_requires_names_what_is_missing(requires, student, teacher, batch, missing) -> None:
    found = requires.missing(student, teacher, batch)
    assert [m.split(" (")[0] for m in found] == missing
    if missing:
        with pytest.raises(RequirementError, match="plugin 'x' needs"):
            requires.check_keys("x", student, teacher, batch)


@pytest.mark.parametrize(("ramp", "epoch", "warmup", "expected"), [
    ("const", 0, 20, 1.0), ("linear", 0, 20, 0.0), ("linear", 5, 20, 0.25), ("linear", 40, 20, 1.0),
    ("cosine", 10, 20, 0.5), ("cosine", 0, 20, 0.0), ("cosine", 25, 20, 1.0), ("linear", 3, 0, 1.0),
])
def test_ramps(ramp: str, epoch: float, warmup: float, expected: float) -> None:
    assert ramp_factor(ramp, epoch, warmup) == pytest.approx(expected)


def test_weighted_terms_sum_weights_ramps_and_log_raw_and_weighted() -> None:
    terms = WeightedTerms([TermSpec(name="ce", plugin="ce", weight=0.5),
                           TermSpec(name="kd", plugin="kd", weight=2.0, ramp="linear", warmup=10,
                                    params={"temperature": 2.0})])
    g = torch.Generator().manual_seed(0)
    s, t, y = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g), torch.tensor([0, 1, 2, 0, 1])
    total, logs = terms({"logits": s}, {"logits": t}, {"label": y}, {"epoch": 5.0})
    ce = float(torch.nn.functional.cross_entropy(s, y))
    kd = float(create_loss("kd", temperature=2.0)({"logits": s}, {"logits": t}, {})["kd"])
    assert logs["ce/raw"] == pytest.approx(ce) and logs["kd/raw"] == pytest.approx(kd)
    assert logs["kd/weighted"] == pytest.approx(2.0 * 0.5 * kd)
    assert float(total) == pytest.approx(0.5 * ce + 1.0 * kd, rel=1e-5)


def test_terms_with_several_components_log_each() -> None:
    terms = WeightedTerms([TermSpec(name="d", plugin="dkd", params={"ce_weight": 1.0, "warmup": 0})])
    _, logs = terms({"logits": torch.randn(4, 3)}, {"logits": torch.randn(4, 3)}, {"label": torch.arange(4) % 3})
    assert {"d/raw", "d/weighted", "d/dkd", "d/ce"} <= set(logs)


@pytest.mark.parametrize(("terms", "match"), [
    ([], "distill.terms is empty"),
    ([TermSpec(name="a", plugin="kd"), TermSpec(name="a", plugin="ce")], "duplicate term names"),
])
def test_bad_term_lists(terms: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        WeightedTerms(terms)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"weight": -1.0}, "weight must be"), ({"ramp": "linaer"}, "Did you mean 'linear'"),
    ({"warmup": -2}, "warmup must be"),
])
def test_bad_term_specs(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TermSpec(name="kd", plugin="kd", **kwargs)


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Sequential(nn.Conv2d(4, 2, 1)))


def test_feature_tap_outputs_inputs_detach_and_removal() -> None:
    net = _net()
    x = torch.randn(2, 1, 6, 6)
    with FeatureTap(net, ["0", "2.0"]) as tap:
        out = net(x)
        feats = tap.pop()
        assert feats["feat:0"].shape == (2, 4, 6, 6) and feats["feat:0"].requires_grad
        assert torch.equal(feats["feat:2.0"], out)
        assert tap.pop() == {}
    assert all(not m._forward_hooks for m in net.modules())
    with FeatureTap(net, ["2.0"], io="input", detach=True) as tap:
        net(x)
        feat = tap.features["feat:2.0"]
        assert feat.shape == (2, 4, 6, 6) and not feat.requires_grad and (feat >= 0).all()  # the ReLU's output


def test_unknown_tap_lists_close_matches() -> None:
    with pytest.raises(ConfigError, match=r"teacher has no module '2\.1' to tap\. Did you mean '2\.0'"):
        FeatureTap(_net(), ["2.1"], what="teacher")


def test_list_modules_names_types_and_shapes() -> None:
    rows = list_modules(_net(), torch.zeros(1, 1, 5, 5))
    assert ("2.0", "Conv2d", (1, 2, 5, 5)) in rows and rows[0][0] == "0"


def test_teacher_cache_round_trip_fp16_fingerprint_and_refusals(tmp_path: Path) -> None:
    teacher = nn.Linear(3, 2)
    fp = teacher_fingerprint(teacher)
    cache = TeacherCache(tmp_path, fp)
    logits = torch.randn(2)
    cache.put("case/1", 3, {"logits": logits, "index": torch.tensor(4)})
    entry = cache.get("case/1", 3)
    assert entry["logits"].dtype == torch.float16 and torch.allclose(entry["logits"].float(), logits, atol=1e-3)
    assert entry["index"].dtype == torch.int64
    assert cache.get("case/1", 4) is None and (cache.hits, cache.misses) == (1, 1)
    with pytest.raises(ValueError, match="deterministic per-sample augmentation seed"):
        cache.get("case/1", None)
    with torch.no_grad():
        teacher.weight[0, 0] += 1.0
    assert teacher_fingerprint(teacher) != fp
    assert TeacherCache(tmp_path, teacher_fingerprint(teacher)).get("case/1", 3) is None
    bad = next(cache.folder.glob("*.pt"))
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="corrupt teacher-cache entry"):
        cache.get("case/1", 3)


def test_every_registered_loss_gives_finite_scalars_and_no_teacher_gradient() -> None:
    for info in list_plugins(kind="loss"):
        cls = get_plugin(info.key)
        torch.manual_seed(0)
        loss = create_loss(info.key)
        student, teacher, batch, ctx = cls.example_inputs(0)
        student = {k: (v.clone().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v)
                   for k, v in student.items()}
        teacher = {k: (v.clone().requires_grad_(True) if torch.is_tensor(v) and v.is_floating_point() else v)
                   for k, v in teacher.items()}
        out = loss(student, teacher, batch, ctx)
        assert out and all(v.ndim == 0 and math.isfinite(float(v.detach())) for v in out.values()), info.key
        sum(out.values()).backward()
        assert all(v.grad is None or float(v.grad.abs().sum()) == 0.0
                   for v in teacher.values() if torch.is_tensor(v) and v.is_floating_point()), info.key
