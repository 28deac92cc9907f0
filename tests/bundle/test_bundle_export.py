# SPDX-License-Identifier: Apache-2.0
"""medkd.bundle in process: export layout and metadata, README, info, verify (good and broken), predictor, errors."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import medkd
from medkd.bundle import (
    SCHEMA_PATH, SCHEMA_URL, CheckResult, bundle_info, export_bundle, load_bundle_predictor, verify_bundle,
)
from medkd.bundle.components import SegmentationInferer
from medkd.bundle.model_card import performance_section
from medkd.bundle.verify import fake_spatial_shape
from medkd.engine.checkpoint import load_checkpoint
from medkd.engine.predictor import file_sha256, load_predictor
from medkd.errors import DataError
from medkd.io.labels import labels_from_names
from medkd.io.volume_io import read_volume
from medkd.methods.bcp.evaluate import class_names
from medkd.methods.bcp.predict import load_run_config, run_predictor, segmentation_spec

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),  # MONAI 1.6: configs run code (trusted here)
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
]

MANDATORY = ("version", "monai_version", "pytorch_version", "numpy_version", "required_packages_version", "task",
             "description", "authors", "copyright", "network_data_format")
TENSOR_KEYS = {"type", "format", "num_channels", "spatial_shape", "dtype", "value_range", "is_patch_data",
               "channel_def"}
HEADINGS = ("Model Overview", "Data", "Training configuration", "Performance", "Intended use", "Limitations",
            "How to run", "References")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, run_2d, run_3d) -> dict[str, Path]:
    models = tmp_path_factory.mktemp("models")
    return {"2d": export_bundle(run_2d, models / "acdc_tiny"), "3d": export_bundle(run_3d, models / "la_tiny")}


@pytest.fixture(scope="module")
def runs(run_2d, run_3d) -> dict[str, Path]:
    return {"2d": run_2d, "3d": run_3d}


def _meta(bundle: Path) -> dict:
    return json.loads((bundle / "configs" / "metadata.json").read_text())


def _broken_copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / bundle.name))


# ---- layout and metadata ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_export_writes_the_bundle_layout(bundles, kind):
    bundle = bundles[kind]
    for name in ("LICENSE", "configs/metadata.json", "configs/inference.json", "configs/logging.conf",
                 "models/model.pt", "docs/README.md", "docs/data_license.txt"):
        assert (bundle / name).is_file(), name
    assert not (bundle / "models" / "model.ts").exists()  # TorchScript is opt-in
    assert not list(bundle.parent.glob(".*partial")), "the work folder was not cleaned up"


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_metadata_has_mandatory_keys_labels_and_network_format(bundles, runs, kind):
    import monai

    meta, cfg = _meta(bundles[kind]), load_run_config(runs[kind])
    assert all(key in meta for key in MANDATORY)
    assert meta["schema"] == SCHEMA_URL and meta["version"] in meta["changelog"]
    assert meta["monai_version"] == monai.__version__.split("+")[0]
    assert meta["numpy_version"] == np.__version__ and meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["required_packages_version"]["medkd"] == medkd.__version__
    assert "research use only" in meta["intended_use"].lower()
    names = class_names(cfg)
    assert meta["label_classes"] == [label.to_dict() for label in labels_from_names(names)]
    nd = meta["network_data_format"]
    assert list(nd["inputs"]) == ["image"] and list(nd["outputs"]) == ["pred"]
    image, pred = nd["inputs"]["image"], nd["outputs"]["pred"]
    assert TENSOR_KEYS <= set(image) and TENSOR_KEYS <= set(pred) and "modality" in image
    assert image["num_channels"] == cfg.in_channels and pred["num_channels"] == cfg.num_classes
    assert image["spatial_shape"] == ["16*n"] * cfg.spatial_dims == pred["spatial_shape"]
    assert pred["channel_def"] == {str(i): name for i, name in enumerate(names)}
    block = meta["medkd"]
    assert block["segmentation_spec"] == segmentation_spec(cfg).to_dict()
    assert block["weights_sha256"] == file_sha256(bundles[kind] / "models" / "model.pt")
    assert (block["method"], block["dataset"], block["net"], block["run"]) == (
        cfg.method.value, cfg.dataset.value, cfg.net, runs[kind].name)


@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_weights_are_the_students_state_dict_and_load_weights_only(bundles, runs, kind):
    state = torch.load(bundles[kind] / "models" / "model.pt", weights_only=True)
    student = load_checkpoint(runs[kind] / "selftrain" / "best.pt")["student"]
    assert set(state) == set(student)
    assert all(torch.equal(state[k], student[k]) for k in student)


def test_inference_config_has_the_workflow_ids(bundles):
    config = json.loads((bundles["2d"] / "configs" / "inference.json").read_text())
    for key in ("imports", "bundle_root", "device", "network_def", "network", "inferer", "output_dir", "dataset_dir",
                "dataset", "evaluator", "preprocessing", "postprocessing", "checkpointloader", "initialize", "run"):
        assert key in config, key
    assert config["network_def"]["_target_"] == "medkd.nets.create_net"
    assert config["preprocessing"]["transforms"][0]["_target_"] == "LoadImaged"
    assert config["postprocessing"]["transforms"][-1]["_target_"] == "SaveImaged"
    assert config["run"] == ["$@evaluator.run()"] and "$import medkd" in config["imports"]


def test_check_properties_is_empty(bundles):
    from monai.bundle import ConfigWorkflow

    bundle = bundles["2d"]
    workflow = ConfigWorkflow(config_file=str(bundle / "configs/inference.json"), logging_file=False,
                              meta_file=str(bundle / "configs/metadata.json"), workflow_type="inference",
                              bundle_root=str(bundle))
    workflow.initialize()
    assert workflow.check_properties() == []


# ---- README and info ----------------------------------------------------------------------------------------------
def test_readme_has_model_zoo_headings_and_the_runs_scores(bundles):
    readme_2d = (bundles["2d"] / "docs" / "README.md").read_text()
    readme_3d = (bundles["3d"] / "docs" / "README.md").read_text()
    for readme in (readme_2d, readme_3d):
        assert all(f"## {heading}" in readme for heading in HEADINGS)
        assert "Bidirectional Copy-Paste for Semi-Supervised Medical Image Segmentation" in readme
        assert "not for diagnostic use" in readme.lower() and "python -m monai.bundle run" in readme
        assert "$" + "{" not in readme and "$name" not in readme
    assert "0.8125" in readme_2d  # the run's train_summary.json best validation score
    assert "Not evaluated" in readme_3d  # no summary, no metrics, no eval file


@pytest.mark.parametrize(
    "files, expected",
    [
        ({"test.json": {"split": "test", "checkpoint": "c.pt", "mean": {"dice": 0.75, "jaccard": 0.6, "hd95": 3.5,
                                                                         "asd": 1.25},
                        "per_class": {"LV": {"dice": 0.75, "jaccard": 0.6, "hd95": 3.5, "asd": 1.25}}}},
         ["split `test`", "| LV | 0.7500 | 0.6000 | 3.5000 | 1.2500 |"]),
        ({"selftrain/metrics.jsonl": "\n".join(json.dumps(r) for r in (
            {"iteration": 10, "loss": 1.0}, {"iteration": 20, "val/score": 0.5}, {"iteration": 40, "val/score": 0.625},
            {"iteration": 60, "val/score": 0.25}))},
         ["0.6250 at iteration 40"]),
        ({"notes.json": {"mean": 1}}, ["Not evaluated"]),
    ],
)
def test_performance_section_reads_the_run_folder(tmp_path, files, expected):
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(content if isinstance(content, str) else json.dumps(content))
    text = performance_section(tmp_path, "selftrain")
    assert all(part in text for part in expected), text


def test_bundle_info_describes_labels_tensors_use_and_commands(bundles):
    text = bundle_info(bundles["2d"])
    for part in ("acdc_tiny 0.1.0", "RV", "Myo", "LV", "Right ventricle", "Research use only", "'image'", "'pred'",
                 "num_channels=4", "python -m monai.bundle run", "medkd pipeline run", "models/model.pt"):
        assert part in text, part
    with pytest.raises(DataError, match="not a MONAI bundle"):
        bundle_info(bundles["2d"].parent)


# ---- verify -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_verify_bundle_passes_a_good_bundle(bundles, kind):
    results = verify_bundle(bundles[kind])
    assert all(isinstance(r, CheckResult) for r in results)
    assert [r for r in results if not r.ok] == []
    names = {"files", "trust", "metadata_schema", "changelog", "properties", "net_in_out", "weights",
             "dependency:fire", "dependency:ignite", "dependency:jsonschema", "dependency:yaml"}
    assert {r.name for r in results} == names


def _drop(meta_key):
    def edit(bundle: Path) -> None:
        meta = _meta(bundle)
        del meta[meta_key]
        (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    return edit


def _set_meta(path: tuple[str, ...], value):
    def edit(bundle: Path) -> None:
        meta = _meta(bundle)
        node = meta
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        (bundle / "configs/metadata.json").write_text(json.dumps(meta))
    return edit


def _drop_config(key):
    def edit(bundle: Path) -> None:
        config = json.loads((bundle / "configs/inference.json").read_text())
        del config[key]
        (bundle / "configs/inference.json").write_text(json.dumps(config))
    return edit


def _wrong_weights(bundle: Path) -> None:
    state = torch.load(bundle / "models/model.pt", weights_only=True)
    key = next(k for k in state if k.endswith("head.weight"))
    state[key] = torch.zeros(3, *state[key].shape[1:])
    torch.save(state, bundle / "models/model.pt")


@pytest.mark.parametrize(
    "edit, failing, reason",
    [
        (lambda b: (b / "LICENSE").unlink(), "files", "LICENSE"),
        (lambda b: (b / "docs/README.md").unlink(), "files", "docs/README.md"),
        (_drop("authors"), "metadata_schema", "'authors' is a required property"),
        (_set_meta(("network_data_format", "inputs", "image", "is_patch_data"), "yes"), "metadata_schema",
         "'yes' is not of type 'boolean'"),
        (_set_meta(("changelog",), {"0.0.1": "first"}), "changelog", "0.1.0"),
        (_set_meta(("network_data_format", "outputs", "pred", "num_channels"), 3), "net_in_out", "3 channels"),
        (_set_meta(("network_data_format", "inputs", "image", "spatial_shape"), [20, 20]), "net_in_out", "failed"),
        (_drop_config("evaluator"), "properties", "evaluator"),
        (_wrong_weights, "weights", "do not fit"),
        (lambda b: (b / "models/model.pt").write_bytes(b"not a checkpoint"), "weights", "weights_only=True"),
    ],
)
def test_verify_bundle_reports_what_is_broken(bundles, tmp_path, edit, failing, reason):
    bundle = _broken_copy(bundles["2d"], tmp_path)
    edit(bundle)
    results = {r.name: r for r in verify_bundle(bundle)}
    assert failing in results and not results[failing].ok, results
    assert reason in results[failing].message
    assert [name for name, r in results.items() if not r.ok] == [failing]


def test_verify_bundle_uses_the_given_schema_and_never_downloads(bundles, tmp_path):
    schema = json.loads(SCHEMA_PATH.read_text())
    schema["required"].append("contact")
    (tmp_path / "strict.json").write_text(json.dumps(schema))
    results = {r.name: r for r in verify_bundle(bundles["2d"], schema=tmp_path / "strict.json")}
    assert not results["metadata_schema"].ok and "contact" in results["metadata_schema"].message


def test_verify_bundle_of_a_missing_folder_fails_on_files(tmp_path):
    results = verify_bundle(tmp_path / "nothing")
    assert results[-1].name == "files" and not results[-1].ok


def test_shipped_schema_is_a_valid_draft7_schema():
    import jsonschema

    jsonschema.Draft7Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize(
    "shape, kwargs, expected",
    [(["16*n", "16*n"], {}, (16, 16)), (["16*n", "2**p", "*", 8], {"n": 2, "p": 3}, (32, 8, 1, 8)),
     ([96, "32*n"], {"n": 3}, (96, 96))],
)
def test_fake_spatial_shape(shape, kwargs, expected):
    assert fake_spatial_shape(shape, **kwargs) == expected


@pytest.mark.parametrize("entry, match", [("__import__('os').getcwd()", "unsupported"), ("16*m", "unsupported"),
                                          ("2**40", "exponent"), ("9**9**9", "implausibly large"),
                                          ("8192*4096*n", "implausibly large")])
def test_fake_spatial_shape_rejects_code_and_huge_sizes(entry, match):
    with pytest.raises(ValueError, match=match):
        fake_spatial_shape([entry])


# ---- predictor and inferer ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_bundle_predictor_equals_the_run_predictor(bundles, runs, nifti_dir, kind):
    predictor = load_bundle_predictor(bundles[kind], "cpu")
    reference = run_predictor(runs[kind], device="cpu")
    for path in sorted(nifti_dir.glob("*.nii.gz")):
        volume = read_volume(path).array
        mask = predictor(volume)
        assert len(np.unique(mask)) > 1, "trivial mask: the test would prove nothing"
        np.testing.assert_array_equal(mask, reference(volume))
    assert predictor.kind == "segmentation" and predictor.spec == reference.spec
    assert predictor.labels == reference.labels and predictor.version == "0.1.0"
    assert predictor.weights_sha256 == file_sha256(bundles[kind] / "models" / "model.pt")


def test_load_predictor_recognises_a_bundle(bundles):
    predictor = load_predictor(bundles["3d"], "cpu")
    assert predictor.source == bundles["3d"] and predictor.name == "la_tiny"


@pytest.mark.parametrize("spatial", [(20, 24, 3), (20, 24)])
def test_segmentation_inferer_keeps_metadata_and_matches_the_spec(spatial):
    from monai.data import MetaTensor

    torch.manual_seed(0)
    net = torch.nn.Conv2d(1, 3, 3, padding=1)
    inferer = SegmentationInferer({"mode": "slices_2d", "num_classes": 3, "patch": [16, 16]})
    affine = torch.diag(torch.tensor([1.5, 1.5, 10.0, 1.0], dtype=torch.float64))
    items = [MetaTensor(torch.rand(1, *spatial) * 100, affine=affine, meta={"filename_or_obj": f"c{i}.nii.gz"})
             for i in range(2)]
    from monai.data import list_data_collate

    batch = list_data_collate([{"image": item} for item in items])["image"]
    out = inferer(batch, net)
    assert out.shape == (2, 1, *spatial) and out.dtype == torch.uint8
    assert isinstance(out, MetaTensor) and list(out.meta["filename_or_obj"]) == ["c0.nii.gz", "c1.nii.gz"]
    torch.testing.assert_close(out.affine[0], affine)
    for b, item in enumerate(items):
        expected = inferer.spec.segment(net, item[0].numpy().T)  # (z, y, x) as SimpleITK reads it
        np.testing.assert_array_equal(out[b, 0].numpy(), expected.T.reshape(spatial))


def test_segmentation_inferer_rejects_multichannel_input():
    inferer = SegmentationInferer({"mode": "sliding_3d", "num_classes": 2, "patch": [16, 16, 16]})
    with pytest.raises(ValueError, match=r"\(B, 1, x, y"):
        inferer(torch.rand(1, 2, 16, 16, 16), torch.nn.Conv3d(2, 2, 1))


# ---- export options and errors ------------------------------------------------------------------------------------
def test_export_refuses_to_overwrite_unless_asked(run_2d, tmp_path):
    out = export_bundle(run_2d, tmp_path / "acdc_tiny", version="0.1.0")
    (out / "docs" / "stale.txt").write_text("left over")
    with pytest.raises(DataError, match="already exists"):
        export_bundle(run_2d, out)
    export_bundle(run_2d, out, version="0.2.0", overwrite=True, description="second export")
    meta = _meta(out)
    assert meta["version"] == "0.2.0" and "0.2.0" in meta["changelog"] and meta["description"] == "second export"
    assert not (out / "docs" / "stale.txt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acdc_tiny"]


def test_export_never_replaces_a_folder_that_is_not_a_bundle(run_2d, tmp_path):
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "data.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a MONAI bundle"):
        export_bundle(run_2d, tmp_path / "precious", overwrite=True)
    assert (tmp_path / "precious" / "data.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    "make_run, kwargs, match",
    [
        (lambda tmp, run: tmp, {}, "not a medkd run folder"),
        (lambda tmp, run: run, {"stage": "pretrain"}, "no best.pt checkpoint"),
        (lambda tmp, run: run, {"checkpoint": "final"}, "checkpoint must be"),
        (lambda tmp, run: run, {"version": "v1"}, "MAJOR.MINOR.PATCH"),
    ],
)
def test_export_errors(run_2d, tmp_path, make_run, kwargs, match):
    with pytest.raises((DataError, ValueError), match=match):
        export_bundle(make_run(tmp_path, run_2d), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:FutureWarning")
def test_export_with_torchscript_writes_an_equivalent_module(run_2d, tmp_path):
    from medkd.bundle.predictor import load_weights, parse_bundle

    out = export_bundle(run_2d, tmp_path / "acdc_ts", torchscript=True)
    module = torch.jit.load(str(out / "models" / "model.ts"))
    network = parse_bundle(out, ("network_def",))["network_def"]
    load_weights(out, network)
    x = torch.rand(2, 1, 32, 48)
    torch.testing.assert_close(module(x), network.eval()(x))


def test_torchscript_failure_only_warns(run_2d, tmp_path, monkeypatch):
    import monai.bundle

    def broken(**kwargs):
        raise RuntimeError("scripting is deprecated")

    monkeypatch.setattr(monai.bundle, "ckpt_export", broken)
    with pytest.warns(RuntimeWarning, match="TorchScript export failed"):
        out = export_bundle(run_2d, tmp_path / "acdc_ts", torchscript=True)
    assert (out / "models" / "model.pt").is_file() and not (out / "models" / "model.ts").exists()


def test_verify_bundle_reports_a_missing_dependency_with_an_install_hint(bundles, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "fire", None)  # "import fire" now raises ImportError
    results = {r.name: r for r in verify_bundle(bundles["2d"])}
    assert not results["dependency:fire"].ok and 'pip install "medkd[bundle]"' in results["dependency:fire"].message
    assert all(r.ok for name, r in results.items() if name != "dependency:fire")
