# SPDX-License-Identifier: Apache-2.0
"""Untrusted bundles never run code (issue 8, case 3) and bad bundle JSON is exit 2 (case 6).

Every hostile bundle below carries a live payload that creates ``MARKER``: with ``trust=True`` it runs (which is
what every loader did before the check), without it ``bundle verify``, ``bundle info``, ``load_predictor`` and
``pipeline run --model`` refuse it and ``MARKER`` never appears. medkd's own 2D and 3D exports load without the flag.
"""

from __future__ import annotations

import copy
import json
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from medkd.bundle import bundle_info, check_bundle_trust, export_bundle, verify_bundle
from medkd.bundle.inference_config import inference_config
from medkd.bundle.trust import refusals_in_config, require_trusted
from medkd.cli import main
from medkd.engine.predictor import SegmentationSpec, load_predictor
from medkd.errors import DataError, UntrustedBundleError
from medkd.methods.bcp.bundle import BCP_BUNDLE_SPEC, SEGMENTATION_INFERER

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning:monai.*"),
]

REPO = Path(__file__).resolve().parents[2]
CT_ANY = REPO / "pipelines" / "ct_any.yaml"
PARSING_CHECKS = ("properties", "net_in_out", "weights")


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, run_2d, run_3d) -> dict[str, Path]:
    models = tmp_path_factory.mktemp("models")
    return {"2d": export_bundle(run_2d, models / "acdc_tiny"), "3d": export_bundle(run_3d, models / "la_tiny")}


def _read(bundle: Path, name: str) -> dict:
    return json.loads((bundle / "configs" / name).read_text())


def _write(bundle: Path, name: str, data: dict) -> None:
    (bundle / "configs" / name).write_text(json.dumps(data, indent=2))


Edit = Callable[[dict, dict, str, Path], None]  # (inference, metadata, marker path, work folder)
TOUCH = "$__import__('pathlib').Path({m!r}).touch()"


def _fill(value: object, m: str) -> object:
    """``value`` with ``{m!r}`` replaced by the marker's repr and ``MARKER_PATH`` by the marker path."""
    if isinstance(value, dict):
        return {k: _fill(v, m) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, m) for v in value]
    return value.replace("{m!r}", repr(m)).replace("MARKER_PATH", m) if isinstance(value, str) else value


def _channels(value: object) -> Edit:
    """Put ``value`` at ``network_def#in_channels``: built whenever the network is."""
    def edit(cfg: dict, meta: dict, m: str, folder: Path) -> None:
        cfg["network_def"]["in_channels"] = _fill(value, m)
    return edit


def _reader_reference(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    cfg["reader_name"] = "open"  # a plain string, handed to LoadImaged's reader through a reference
    cfg["network_def"]["in_channels"] = {"_target_": "LoadImaged", "keys": "image", "reader": "@reader_name",
                                         "file": m, "mode": "w"}


def _module_method(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    cfg["modules"] = ["$import os"]  # an allowed import, reached through a reference to it
    cfg["network_def"]["in_channels"] = f"$@modules#0.makedirs({m!r}) or 1"


def _meta_reference(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    meta["medkd_note"] = TOUCH.format(m=m) + " or 1"
    cfg["network_def"]["in_channels"] = "@_meta_#medkd_note"


def _network_key(key: str) -> Edit:
    def edit(cfg: dict, meta: dict, m: str, folder: Path) -> None:
        cfg["network_def"][key] = TOUCH.format(m=m)
    return edit


def _id_path_key(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    cfg["network_def#in_channels"] = TOUCH.format(m=m) + " or 1"


def _file_macro(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    (folder / "evil.json").write_text(json.dumps({"payload": TOUCH.format(m=m) + " or 1"}))
    cfg["network_def"]["in_channels"] = f"%{folder / 'evil.json'}#payload"


def _initialize(cfg: dict, meta: dict, m: str, folder: Path) -> None:
    cfg["initialize"].append(TOUCH.format(m=m))


#: (name, edit, a key the refusal names): each payload creates the marker when its config is parsed
PAYLOADS = [
    ("target_subprocess", _channels({"_target_": "subprocess.run",
                                     "args": [sys.executable, "-c", "open({m!r}, 'w')"]}),
     "network_def#in_channels#_target_"),
    ("target_builtin_open", _channels({"_target_": "open", "file": "MARKER_PATH", "mode": "w"}),
     "network_def#in_channels#_target_"),
    ("reader_imported_by_name", _channels({"_target_": "LoadImaged", "keys": "image", "reader": "open",
                                           "file": "MARKER_PATH", "mode": "w"}), "network_def#in_channels#reader"),
    ("reader_computed", _channels({"_target_": "LoadImaged", "keys": "image", "reader": "$'op' + 'en'",
                                   "file": "MARKER_PATH", "mode": "w"}), "network_def#in_channels#reader"),
    ("reader_from_a_reference", _reader_reference, "network_def#in_channels#reader"),
    ("callable_mode_partial", _channels({"_target_": "monai.data.DatasetFunc", "data": "open", "func": {
        "_target_": "monai.transforms.LoadImage", "_mode_": "callable", "file": "MARKER_PATH", "mode": "w"}}),
     "network_def#in_channels#func#_mode_"),
    ("dunder_import", _channels(TOUCH + " or 1"), "network_def#in_channels"),
    ("open_call", _channels("$open({m!r}, 'w').close() or 1"), "network_def#in_channels"),
    ("method_of_imported_module", _module_method, "network_def#in_channels"),
    ("subclasses_escape", _channels("$[c for c in ().__class__.__base__.__subclasses__() if c.__name__ == "
                                    "'_wrap_close'][0].__init__.__globals__['makedirs']({m!r}) or 1"),
     "network_def#in_channels"),
    ("metadata_expression", _meta_reference, "medkd_note"),
    ("requires_expression", _network_key("_requires_"), "network_def#_requires_"),
    ("disabled_expression", _network_key("_disabled_"), "network_def#_disabled_"),
    ("id_path_key", _id_path_key, "network_def#in_channels"),
    ("macro_from_another_file", _file_macro, "network_def#in_channels"),
    ("initialize_expression", _initialize, "initialize#1"),
]


def _hostile(bundle: Path, tmp_path: Path, edit: Edit) -> tuple[Path, Path]:
    """(a copy of ``bundle`` edited by ``edit``, the marker its payload would create)."""
    copy_ = Path(shutil.copytree(bundle, tmp_path / "hostile"))
    marker = tmp_path / "MARKER"
    cfg, meta = _read(copy_, "inference.json"), _read(copy_, "metadata.json")
    edit(cfg, meta, str(marker), tmp_path)
    _write(copy_, "inference.json", cfg)
    _write(copy_, "metadata.json", meta)
    return copy_, marker


def _bcp_inference(net: str, in_channels: int, spec: SegmentationSpec) -> dict:
    """``inference.json`` of a BCP bundle: BCP's transforms and segmentation inferer around a registered net."""
    return inference_config({"name": net, "in_channels": in_channels, "out_channels": spec.num_classes},
                            inferer={"_target_": SEGMENTATION_INFERER, "spec": spec.to_dict()},
                            preprocessing=BCP_BUNDLE_SPEC.preprocessing(None),
                            postprocessing=BCP_BUNDLE_SPEC.postprocessing(None))


# ---- medkd's own exports are trusted --------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["2d", "3d"])
def test_medkd_exports_pass_the_trust_check_and_load_without_the_flag(bundles, kind):
    assert check_bundle_trust(bundles[kind]) == []
    require_trusted(bundles[kind])
    results = {r.name: r for r in verify_bundle(bundles[kind])}
    assert results["trust"].ok and all(r.ok for r in results.values()), results
    assert load_predictor(bundles[kind], "cpu").kind == "segmentation"


@pytest.mark.parametrize("mode, patch", [("slices_2d", (64, 64)), ("sliding_3d", (32, 32, 16))])
def test_inference_config_of_any_net_is_allowlisted(mode, patch):
    from medkd.nets import list_nets

    for net in list_nets():
        assert refusals_in_config(_bcp_inference(net, 1, SegmentationSpec(mode, 3, patch))) == [], net


# ---- hostile bundles: refused everywhere, nothing runs --------------------------------------------------------------
@pytest.mark.parametrize("name, edit, key", PAYLOADS, ids=[p[0] for p in PAYLOADS])
def test_hostile_bundle_is_refused_and_runs_nothing(bundles, tmp_path, capsys, name, edit, key):
    bundle, marker = _hostile(bundles["2d"], tmp_path, edit)

    refused = check_bundle_trust(bundle)
    assert key in {r.key for r in refused}, refused

    results = {r.name: r for r in verify_bundle(bundle)}
    assert not results["trust"].ok and key in results["trust"].message
    assert all(not results[n].ok and "not run" in results[n].message for n in PARSING_CHECKS)
    with pytest.raises(UntrustedBundleError, match="--trust-bundle") as err:
        load_predictor(bundle, "cpu")
    assert err.value.key in {r.key for r in refused}
    info = bundle_info(bundle)
    assert "REFUSED" in info and "python -m monai.bundle run" not in info  # no command that would run the code
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert "FAIL trust" in out and key in out and "Traceback" not in out
    assert main(["bundle", "info", str(bundle)]) == 0
    assert not marker.exists(), "config code ran without --trust-bundle"

    # the payload is live: trusted, the configs run (what every loader did before the check)
    verify_bundle(bundle, trust=True)
    assert marker.exists()


def test_pipeline_refuses_a_hostile_bundle_and_trust_bundle_runs_a_benign_one(bundles, tmp_path, capsys):
    from medkd.data.synthetic_dicom import write_dicom_series

    write_dicom_series(tmp_path / "in" / "ct", n_slices=3, rows=40, cols=48, seed=3)
    argv = ["-q", "pipeline", "run", str(CT_ANY), "-i", str(tmp_path / "in"), "--workers", "0", "--device", "cpu"]
    for name, edit, key in (PAYLOADS[0], PAYLOADS[6]):
        bundle, marker = _hostile(bundles["2d"], tmp_path / name, edit)
        capsys.readouterr()
        assert main([*argv, "-o", str(tmp_path / name / "out"), "--model", str(bundle)]) == 2
        err = capsys.readouterr().err
        assert key in err and "--trust-bundle" in err and "Traceback" not in err and len(err.splitlines()) == 1
        assert not marker.exists()

    benign = _benign(bundles["2d"], tmp_path)
    assert main([*argv, "-o", str(tmp_path / "b1"), "--model", str(benign)]) == 2
    assert "device" in capsys.readouterr().err
    assert main([*argv, "-o", str(tmp_path / "b2"), "--model", str(benign), "--trust-bundle"]) == 0


def _benign(bundle: Path, tmp_path: Path) -> Path:
    """A bundle with a harmless expression outside the allowlist (a string method)."""
    def edit(cfg: dict, meta: dict, m: str, folder: Path) -> None:
        cfg["device"] = "$torch.device('CPU'.lower())"
    benign, _ = _hostile(bundle, tmp_path / "benign", edit)
    return benign


def test_trust_bypasses_the_check_for_a_benign_expression(bundles, tmp_path, capsys):
    bundle = _benign(bundles["2d"], tmp_path)
    assert [r.key for r in check_bundle_trust(bundle)] == ["device"]
    with pytest.raises(UntrustedBundleError) as err:
        load_predictor(bundle, "cpu")
    assert err.value.key == "device" and str(bundle / "configs" / "inference.json") in str(err.value)
    assert load_predictor(bundle, "cpu", trust=True).kind == "segmentation"
    results = verify_bundle(bundle, trust=True)
    assert all(r.ok for r in results) and "device" in {r.name: r for r in results}["trust"].message
    capsys.readouterr()
    assert main(["bundle", "verify", str(bundle)]) == 1
    assert main(["bundle", "verify", str(bundle), "--trust-bundle"]) == 0


def test_refusal_message_names_the_first_key_and_counts_the_others(bundles, tmp_path):
    def edit(cfg: dict, meta: dict, m: str, folder: Path) -> None:
        cfg["run"] = ["$__import__('os').system('id')", "$exec('1')"]
        cfg["network_def"]["_target_"] = "subprocess.run"
    bundle, _ = _hostile(bundles["2d"], tmp_path, edit)
    with pytest.raises(UntrustedBundleError) as err:
        require_trusted(bundle)
    message = str(err.value)
    assert message.startswith(f"{bundle / 'configs' / 'inference.json'}: network_def#_target_: 'subprocess.run'")
    assert "2 more refused" in message and "only if you trust who made this bundle" in message


def test_export_refuses_to_write_a_bundle_that_would_not_be_trusted(run_2d, tmp_path):
    with pytest.raises(DataError, match="trust check.*description"):
        export_bundle(run_2d, tmp_path / "odd", description="$__import__('os').getcwd()")
    assert not (tmp_path / "odd").exists()


# ---- the grammar ---------------------------------------------------------------------------------------------------
HOSTILE_VALUES = {
    "target_os_system": {"x": {"_target_": "os.system", "command": "id"}},
    "target_bare_eval": {"x": {"_target_": "eval"}},
    "target_expression": {"x": {"_target_": "$os.system"}},
    "target_reference": {"x": {"_target_": "@imports#1"}},
    "target_monai_function": {"x": {"_target_": "monai.data.save_net_with_metadata"}},
    "target_monai_bundle": {"x": {"_target_": "monai.bundle.run"}},
    "target_bare_outside_prefixes": {"x": {"_target_": "ConfigWorkflow"}},
    "target_medkd_outside_prefixes": {"x": {"_target_": "medkd.api.app"}},
    "target_reexported_through_medkd": {"x": {"_target_": "medkd.nets.factory.torch.load"}},
    "target_private": {"x": {"_target_": "monai.transforms._private"}},
    "target_unpickling_dataset": {"x": {"_target_": "PersistentDataset", "data": [], "cache_dir": "."}},
    "mode_debug": {"x": {"_target_": "Compose", "_mode_": "debug"}},
    "mode_callable_partial": {"x": {"_target_": "monai.transforms.LoadImage", "_mode_": "callable", "mode": "w"}},
    "component_class_as_value": {"x": {"_target_": "monai.data.DatasetFunc", "data": "open",
                                       "func": "$monai.transforms.LoadImage"}},
    "component_positional_reader": {"x": "$monai.transforms.LoadImage('open', file='m', mode='w')"},
    "component_keyword_reader": {"x": "$monai.transforms.LoadImage(reader='open', file='m', mode='w')"},
    "weights_only_false": {"x": {"_target_": "Dataset", "data": [], "weights_only": False}},
    "allow_pickle_true": {"x": {"_target_": "LoadImaged", "keys": "image", "allow_pickle": True}},
    "writer_by_dotted_name": {"x": {"_target_": "SaveImaged", "keys": "pred", "writer": "builtins.open"}},
    "reader_macro": {"x": {"_target_": "LoadImaged", "keys": "image", "reader": "%bundle_root"}},
    "reader_reference_to_a_string": {"name": "open", "x": {"_target_": "LoadImaged", "keys": "image",
                                                           "reader": "@name"}},
    "reader_computed_string": {"x": {"_target_": "LoadImaged", "keys": "image", "reader": "$'op' + 'en'"}},
    "import_subprocess": {"imports": ["$import subprocess"]},
    "import_from_os": {"imports": ["$from os import system"]},
    "import_star": {"imports": ["$from os import *"]},
    "import_relative": {"imports": ["$from . import evil"]},
    "import_two_statements": {"imports": ["$import os; os.system('id')"]},
    "import_shadowing_torch": {"imports": ["$import os as torch"]},
    "expression_os_system": {"x": "$os.system('id')"},
    "expression_getattr": {"x": "$getattr(torch, 'load')('x')"},
    "expression_torch_load": {"x": "$torch.load('x')"},
    "expression_lambda": {"x": "$(lambda: 1)()"},
    "expression_walrus": {"x": "$(y := 1)"},
    "expression_fstring": {"x": "$f'{1}'"},
    "expression_unpacking": {"x": "$dict(**{'a': 1})"},
    "expression_module_value": {"x": "$os"},
    "expression_attribute_of_reference": {"x": "$@network_def.__class__"},
    "expression_local_refs_global": {"x": "$__local_refs"},
    "expression_setattr_other": {"x": "$setattr(torch, 'load', None)"},
    "expression_not_python": {"x": "$import"},
    "reference_to_import_list": {"x": "@imports"},
    "macro_copying_an_import": {"x": "%imports#1"},
    "merge_key": {"+imports": ["$import os"]},
}
BENIGN_VALUES = {
    "numpy_alias": {"x": "$np.float32"},
    "local_macro": {"x": "%network_def"},
    "relative_reference": {"x": {"a": 1, "b": "@#a"}},
    "from_import_of_a_component": {"imports": ["$from monai.transforms import LoadImaged"],
                                   "x": "$LoadImaged(keys='image')"},
    "dotted_monai_target": {"x": {"_target_": "monai.inferers.SlidingWindowInferer", "roi_size": [8, 8]}},
    "setattr_cudnn": {"x": "$setattr(torch.backends.cudnn, 'deterministic', True)"},
    "keywords_in_strings": {"x": "$'a@or b'"},
    "component_call_with_keywords": {"x": "$monai.transforms.LoadImage(reader='NibabelReader', image_only=True)"},
    "reader_class": {"x": {"_target_": "LoadImaged", "keys": "image", "reader": ["NibabelReader", "ITKReader"]}},
    "reader_component": {"r": {"_target_": "NibabelReader"},
                         "x": {"_target_": "LoadImaged", "keys": "image", "reader": ["@r", "$monai.data.ITKReader"]}},
}


@pytest.mark.parametrize("name", sorted(HOSTILE_VALUES))
def test_grammar_refuses(name):
    config = {**_bcp_inference("bcp_unet2d_half", 1, SegmentationSpec("slices_2d", 4, (64, 64))),
              **copy.deepcopy(HOSTILE_VALUES[name])}
    refusals = refusals_in_config(config)
    assert refusals, name
    assert all(r.why and len(r.text) <= 80 for r in refusals)


@pytest.mark.parametrize("name", sorted(BENIGN_VALUES))
def test_grammar_allows(name):
    config = {**_bcp_inference("bcp_unet2d_half", 1, SegmentationSpec("slices_2d", 4, (64, 64))),
              **copy.deepcopy(BENIGN_VALUES[name])}
    assert refusals_in_config(config) == []


@pytest.mark.parametrize(
    "file, text, key",
    [
        ("logging.conf", "[handler_x]\nclass=StreamHandler\nargs=(__import__('os').system('id'),)\n", "handler_x#args"),
        ("logging.conf", "[handler_x]\nclass=os.system\n", "handler_x#class"),
        ("train.yaml", "trainer:\n  _target_: subprocess.Popen\n", "trainer#_target_"),
        ("extra.json", '{"run": ["$exec(\'1\')"]}', "run#0"),
    ],
)
def test_every_config_file_is_checked(bundles, tmp_path, file, text, key):
    bundle = Path(shutil.copytree(bundles["3d"], tmp_path / "b"))
    (bundle / "configs" / file).write_text(text)
    assert [(r.file, r.key) for r in check_bundle_trust(bundle)] == [(f"configs/{file}", key)]


# ---- bad JSON: exit 2 with the file and the problem, never a traceback ----------------------------------------------
BAD_FILES = [
    ("inference.json", '{"network_def": {"_target_": "medkd.nets.create_net",\n  "name": }', "line 2, column 11"),
    ("inference.json", "[1, 2]", "must hold a JSON object"),
    ("inference.json", '{"inferer": {}}', "has no 'network_def'"),
    ("inference.json", '{"network_def": "$1"}', "'network_def' is not an object"),
    ("metadata.json", '{"version": "0.1.0",}', "line 1, column 21"),
    ("metadata.json", '"a string"', "must hold a JSON object"),
    ("inference.json", b"\xff\xfe{}", "not UTF-8"),
]


@pytest.mark.parametrize("file, content, problem", BAD_FILES, ids=[f"{b[0]}:{b[2]}" for b in BAD_FILES])
def test_bad_config_json_is_a_data_error_with_exit_2(bundles, tmp_path, capsys, file, content, problem):
    bundle = Path(shutil.copytree(bundles["2d"], tmp_path / "b"))
    target = bundle / "configs" / file
    target.write_bytes(content) if isinstance(content, bytes) else target.write_text(content)
    with pytest.raises(DataError, match=problem):
        load_predictor(bundle, "cpu")
    capsys.readouterr()
    for command in (["bundle", "verify", str(bundle)], ["bundle", "info", str(bundle)]):
        assert main(command) == 2, command
        err = capsys.readouterr().err
        assert f"{target}: " in err and problem in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_pipeline_with_a_bad_bundle_json_exits_2(bundles, tmp_path, capsys):
    from medkd.data.synthetic_dicom import write_dicom_series

    bundle = Path(shutil.copytree(bundles["2d"], tmp_path / "b"))
    (bundle / "configs" / "inference.json").write_text('{"network_def": ')
    write_dicom_series(tmp_path / "in" / "ct", n_slices=3, rows=16, cols=16)
    capsys.readouterr()
    assert main(["-q", "pipeline", "run", str(CT_ANY), "-i", str(tmp_path / "in"), "-o", str(tmp_path / "o"),
                 "--model", str(bundle), "--workers", "0"]) == 2
    err = capsys.readouterr().err
    assert "inference.json" in err and "not valid JSON" in err and "Traceback" not in err
