# SPDX-License-Identifier: Apache-2.0
"""Bundles per method: the generic writer (medkd.bundle) driven by a method's BundleSpec (medkd.methods.bundle_spec).

A toy detection method, registered only in these tests, exports through the same writer as BCP: its metadata passes
medkd's schema, its model card carries its own prose (none of BCP's), its ``pred`` is a dict per image so
``verify_net_in_out`` is skipped and ``pred_dict`` checks boxes/labels/scores instead. ``--stage`` is checked against
the run's method once ``run.json`` is read, and a method without a spec is a clear error naming it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from medkd.bundle import bundle_info, export_bundle, load_bundle_predictor, verify_bundle
from medkd.bundle.layout import SCHEMA_PATH
from medkd.bundle.trust import check_bundle_trust, component_problem, medkd_prefixes
from medkd.cli import main
from medkd.errors import DataError
from medkd.methods.bcp.bundle import BCP_BUNDLE_SPEC
from medkd.methods.bundle_spec import (
    BUNDLE_SPECS,
    BundleSpec,
    DatasetCard,
    ExportModel,
    ModelCardText,
    detection_pred,
    find_bundle_spec,
    get_bundle_spec,
    image_tensor,
    network_data_format,
    register_bundle_spec,
)
from medkd.nets import NETS
from medkd.runs import write_run_info

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),  # MONAI 1.6: configs run code (trusted)
]

TOY_METHOD = "toy_bundle_det"
TOY_NET = "toy_bundle_detector"
TOY_PROSE = "ToyDet, a one-box detector that exists only in medkd's bundle tests"


class ToyDetector(nn.Module):
    """One box per image: ``(B, C, H, W)`` -> a list of ``{"boxes", "labels", "scores"}`` (torchvision style)."""

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, num_classes, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        logits = self.conv(x).mean(dim=(2, 3))
        h, w = x.shape[-2:]
        box = torch.tensor([[0.0, 0.0, float(w), float(h)]])
        return [{"boxes": box, "labels": logit.argmax()[None], "scores": logit.softmax(0).max()[None]}
                for logit in logits]


class NoKeysDetector(ToyDetector):
    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:  # type: ignore[override]
        return [{"boxes": item["boxes"]} for item in super().forward(x)]


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    stage = stage or "train"
    file = run / stage / "last.pt"
    if not file.is_file():
        raise DataError(file.parent, "no last.pt checkpoint")
    state = torch.load(file, weights_only=True)
    net = NETS.get(TOY_NET)(in_channels=1, num_classes=2)
    net.load_state_dict(state)
    return ExportModel(run=run, config={"lr": 0.01}, config_dict={"lr": 0.01, "net": TOY_NET}, net=TOY_NET,
                       network=net, state=state, checkpoint_file=file, stage=stage, iteration=3, best_score=0.25)


def _toy_spec(**overrides: Any) -> BundleSpec:
    fields: dict[str, Any] = {
        "method": TOY_METHOD,
        "kind": "detection",
        "stages": ("warmup", "train"),
        "load": _load,
        "label_names": lambda model: ["background", "polyp"],
        "dataset_card": lambda model: DatasetCard("toy synthetic frames", "XC", "synthetic PNG frames", "PNG images",
                                               terms="Toy data terms: none, it is noise."),
        "describe": lambda model, names, card: (f"2D detection of {names[1]} ({card.title})", "A toy detector."),
        "network_def": lambda model: {"name": TOY_NET, "in_channels": 1, "num_classes": 2},
        "network_data_format": lambda model, names, card, divisor: network_data_format(
            image_tensor(spatial_shape=[32, 32], modality=card.modality), detection_pred(names)),
        "inferer": lambda model: {"_target_": "SimpleInferer"},
        "preprocessing": lambda model: [
            {"_target_": "LoadImaged", "keys": "image", "reader": "PILReader", "image_only": True},
            {"_target_": "EnsureChannelFirstd", "keys": "image", "channel_dim": "no_channel"},
        ],
        "postprocessing": lambda model: [],
        "model_card": lambda model: ModelCardText(
            method_long=TOY_PROSE, network=f"`{TOY_NET}`, 1 input channel", inference="one box per image",
            input_output="- Input: a PNG image.\n- Output: boxes, labels and scores.",
            limitations=["A toy: its boxes mean nothing."], how_to_run="`medkd toy predict {bundle_path}`",
            training_keys=("lr",), metrics=(("ap50", "AP50"),), validation_score="AP50",
            eval_command="`medkd toy eval`",
        ),
        "references": ("Toy Author. A toy detector. Nowhere 2026.",),
        "input_patterns": ("*.png",),
        "skip_checks": frozenset({"net_in_out"}),
    }
    fields.update(overrides)
    return BundleSpec(**fields)


@pytest.fixture
def toy_net(monkeypatch):
    """The toy detector in the net registry for this test only."""
    monkeypatch.setitem(NETS._items, TOY_NET, ToyDetector)
    monkeypatch.setitem(NETS._meta, TOY_NET, {"task": "detection"})


def _register(monkeypatch, spec: BundleSpec, *names: str) -> BundleSpec:
    """Register ``spec`` for this test only."""
    for name in (spec.method, *names):
        monkeypatch.setitem(BUNDLE_SPECS._items, name, spec)
        monkeypatch.setitem(BUNDLE_SPECS._meta, name, {})
    return spec


@pytest.fixture
def toy_spec(monkeypatch, toy_net) -> BundleSpec:
    return _register(monkeypatch, _toy_spec())


@pytest.fixture
def toy_run(tmp_path) -> Path:
    run = tmp_path / "toy_run"
    torch.manual_seed(0)
    (run / "train").mkdir(parents=True)
    torch.save(ToyDetector().state_dict(), run / "train" / "last.pt")
    write_run_info(run, method=TOY_METHOD, kind="detection")
    return run


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


# ---- a non-BCP method through the generic writer --------------------------------------------------------------------
def test_toy_detection_bundle_passes_the_schema_and_carries_its_own_prose(toy_spec, toy_run, tmp_path):
    import jsonschema

    bundle = export_bundle(toy_run, tmp_path / "models" / "toy_bundle")
    meta = _meta(bundle)
    jsonschema.validate(instance=meta, schema=json.loads(SCHEMA_PATH.read_text()))
    assert meta["medkd"]["kind"] == "detection" and meta["medkd"]["method"] == TOY_METHOD
    assert meta["medkd"]["stage"] == "train" and meta["medkd"]["best_score"] == 0.25
    assert meta["task"] == "2D detection of polyp (toy synthetic frames)" and meta["description"] == "A toy detector."
    assert meta["references"] == ["Toy Author. A toy detector. Nowhere 2026."]
    assert [label["name"] for label in meta["label_classes"]] == ["polyp"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert (pred["type"], pred["format"], pred["channel_def"]) == ("object", "dict", {"0": "background", "1": "polyp"})

    config = json.loads((bundle / "configs" / "inference.json").read_text())
    assert config["network_def"] == {"_target_": "medkd.nets.create_net", "name": TOY_NET, "in_channels": 1,
                                     "num_classes": 2}
    assert config["inferer"] == {"_target_": "SimpleInferer"} and "'*.png'" in config["datalist"]
    assert config["preprocessing"]["transforms"][0]["reader"] == "PILReader"
    assert config["postprocessing"]["transforms"] == []

    readme = (bundle / "docs" / "README.md").read_text()
    for part in (TOY_PROSE, "`medkd toy predict models/toy_bundle`", "A toy: its boxes mean nothing.",
                 "one box per image", "| `lr` | `0.01` |", "--dataset_dir INPUT_DIR", "Toy Author. A toy detector.",
                 "python -m monai.bundle run",
                 "docs/data_license.txt"):
        assert part in readme, part
    for absent in ("verify_net_in_out", "Bidirectional Copy-Paste", "medkd bcp", "SegmentationSpec"):
        assert absent not in readme, absent
    assert not re.search(r"\$[A-Za-z_{]", readme)  # every placeholder filled
    assert (bundle / "docs" / "data_license.txt").read_text() == "Toy data terms: none, it is noise.\n"
    assert torch.equal(torch.load(bundle / "models" / "model.pt", weights_only=True)["conv.weight"],
                       torch.load(toy_run / "train" / "last.pt", weights_only=True)["conv.weight"])


def test_toy_bundle_verifies_with_its_checks(toy_spec, toy_run, tmp_path):
    bundle = export_bundle(toy_run, tmp_path / "toy_bundle")
    results = {r.name: r for r in verify_bundle(bundle)}
    assert all(r.ok for r in results.values()), [str(r) for r in results.values() if not r.ok]
    assert check_bundle_trust(bundle) == []
    assert results["net_in_out"].message.startswith("skipped")
    assert "boxes, labels, scores" in results["pred_dict"].message
    text = bundle_info(bundle)
    assert f"detection by {TOY_METHOD}" in text and "verify_net_in_out" not in text


def test_pred_dict_check_names_missing_keys(monkeypatch, toy_spec, toy_run, tmp_path):
    bundle = export_bundle(toy_run, tmp_path / "toy_bundle")
    monkeypatch.setitem(NETS._items, TOY_NET, NoKeysDetector)
    results = {r.name: r for r in verify_bundle(bundle)}
    assert not results["pred_dict"].ok and "labels, scores" in results["pred_dict"].message


def test_skip_checks_of_the_spec_apply_to_image_outputs_too(monkeypatch, toy_net, toy_run, tmp_path):
    """A spec may skip verify_net_in_out for an image ``pred`` (a network MONAI's test cannot feed)."""
    seg_pred = {"type": "image", "format": "segmentation", "num_channels": 7, "spatial_shape": [32, 32],
                "dtype": "float32", "value_range": [], "is_patch_data": True, "channel_def": {"0": "x"}}
    spec = _toy_spec(network_data_format=lambda model, names, card, divisor: network_data_format(
        image_tensor(spatial_shape=[32, 32], modality="XC"), seg_pred))
    _register(monkeypatch, spec)
    results = {r.name: r for r in verify_bundle(export_bundle(toy_run, tmp_path / "toy_bundle"))}
    assert results["net_in_out"].ok and TOY_METHOD in results["net_in_out"].message
    _register(monkeypatch, _toy_spec(network_data_format=spec.network_data_format, skip_checks=frozenset()))
    results = {r.name: r for r in verify_bundle(tmp_path / "toy_bundle")}
    assert not results["net_in_out"].ok and "not a (B, C, ...) tensor" in results["net_in_out"].message


def test_bundle_predictor_comes_from_the_spec_else_the_kind(monkeypatch, toy_net, toy_run, tmp_path):
    spec = _register(monkeypatch, _toy_spec())
    bundle = export_bundle(toy_run, tmp_path / "toy_bundle")
    with pytest.raises(DataError, match="cannot load bundles of kind 'detection'"):
        load_bundle_predictor(bundle)
    seen = {}

    def predictor(path, meta, network, inferer, device):
        seen.update(path=path, method=meta["medkd"]["method"], network=network, device=str(device))
        return "toy predictor"

    _register(monkeypatch, _toy_spec(predictor=predictor))
    assert load_bundle_predictor(bundle) == "toy predictor"
    assert seen["method"] == TOY_METHOD and isinstance(seen["network"], ToyDetector) and seen["device"] == "cpu"
    assert spec.predictor is None


# ---- stages are the method's -----------------------------------------------------------------------------------------
def test_stage_must_be_one_of_the_methods_stages(toy_spec, toy_run, run_2d, tmp_path):
    with pytest.raises(DataError, match=r"stage 'selftrain' is not a stage of method 'toy_bundle_det'; its stages: "
                                        r"warmup, train"):
        export_bundle(toy_run, tmp_path / "a", stage="selftrain")
    with pytest.raises(DataError, match=r"stage 'train' is not a stage of method 'bcp'; its stages: pretrain, "
                                        r"selftrain, supervised"):
        export_bundle(run_2d, tmp_path / "b", stage="train")
    with pytest.raises(DataError, match="no last.pt checkpoint"):  # a valid stage reaches the method's loader
        export_bundle(toy_run, tmp_path / "c", stage="warmup")
    assert not any((tmp_path / name).exists() for name in "abc")


def test_cli_stage_is_checked_after_reading_the_run(toy_spec, toy_run, tmp_path, capsys):
    code = main(["bundle", "export", "--run", str(toy_run), "-o", str(tmp_path / "out"), "--stage", "pretrain"])
    err = capsys.readouterr().err
    assert code == 2 and "its stages: warmup, train" in err and "Traceback" not in err
    assert main(["bundle", "export", "--run", str(toy_run), "-o", str(tmp_path / "out"), "--stage", "train"]) == 0
    assert _meta(tmp_path / "out")["medkd"]["stage"] == "train"


# ---- methods without a spec, lookup, validation ---------------------------------------------------------------------
def test_export_of_a_method_without_a_spec_names_the_method(tmp_path):
    run = tmp_path / "run"
    write_run_info(run, method="no_spec_method", kind="segmentation")
    with pytest.raises(DataError, match="method 'no_spec_method' provides no bundle spec") as info:
        export_bundle(run, tmp_path / "out")
    assert str(info.value.path) == str(run) and "bcp" in info.value.problem  # names the methods that have one
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("method", ["bcp", "supervised"])
def test_bcp_spec_is_found_lazily_and_for_the_supervised_baseline(method):
    assert find_bundle_spec(method) is BCP_BUNDLE_SPEC and get_bundle_spec(method, "run").kind == "segmentation"
    assert BCP_BUNDLE_SPEC.stages == ("pretrain", "selftrain", "supervised")


@pytest.mark.parametrize("method", ["../etc", "no_such_method", "bcp.trainer"])
def test_unknown_or_odd_method_names_find_no_spec(method):
    assert find_bundle_spec(method) is None


@pytest.mark.parametrize("overrides, match", [({"stages": ()}, "at least one stage"),
                                              ({"skip_checks": frozenset({"files"})}, "cannot skip")])
def test_bundle_spec_is_validated(overrides, match):
    with pytest.raises(ValueError, match=match):
        _toy_spec(**overrides)


def test_register_bundle_spec_with_aliases(monkeypatch):
    monkeypatch.setattr(BUNDLE_SPECS, "_items", dict(BUNDLE_SPECS._items))
    monkeypatch.setattr(BUNDLE_SPECS, "_meta", dict(BUNDLE_SPECS._meta))
    spec = register_bundle_spec(_toy_spec(), "toy_alias")
    assert find_bundle_spec("toy_alias") is spec is find_bundle_spec(TOY_METHOD)


def test_component_modules_of_a_registered_spec_join_the_trust_allowlist(monkeypatch):
    assert component_problem("json.JSONDecoder") is not None
    _register(monkeypatch, _toy_spec(method="toy_components", component_modules=("json",)))
    assert "json" in medkd_prefixes() and component_problem("json.JSONDecoder") is None


def test_bcp_run_with_run_json_exports_the_bundle_of_a_legacy_run(run_2d, tmp_path):
    """A BCP run with ``run.json`` (what training writes now) and a legacy one (``config.yaml`` only) give the same
    configs."""
    import shutil

    run = Path(shutil.copytree(run_2d, tmp_path / "runs" / run_2d.name))
    write_run_info(run, method="bcp", kind="segmentation")
    new = export_bundle(run, tmp_path / "new" / "acdc")
    legacy = export_bundle(run_2d, tmp_path / "legacy" / "acdc")
    for name in ("configs/metadata.json", "configs/inference.json", "docs/README.md"):
        assert (new / name).read_text() == (legacy / name).read_text(), name


def test_a_variant_spec_serves_the_runs_of_its_kind_only(monkeypatch):
    monkeypatch.setattr(BUNDLE_SPECS, "_items", dict(BUNDLE_SPECS._items))
    monkeypatch.setattr(BUNDLE_SPECS, "_meta", dict(BUNDLE_SPECS._meta))
    main_spec = register_bundle_spec(_toy_spec())
    variant = register_bundle_spec(_toy_spec(kind="classification"), variant=True)
    assert find_bundle_spec(TOY_METHOD) is main_spec is find_bundle_spec(TOY_METHOD, main_spec.kind)
    assert find_bundle_spec(TOY_METHOD, "classification") is variant
    assert find_bundle_spec(TOY_METHOD, "forecasting") is main_spec  # no variant: the main spec
    with pytest.raises(DataError, match="methods with one") as err:
        get_bundle_spec("no_such_method", "runs/x")
    assert "/" not in str(err.value).split("methods with one:")[-1]  # variant keys are not methods


def test_distill_classification_runs_find_the_classifier_spec():
    assert find_bundle_spec("distill").kind == "segmentation"
    spec = find_bundle_spec("distill", "classification")
    assert spec.kind == "classification" and not spec.background and spec.predictor is not None
