# SPDX-License-Identifier: Apache-2.0
"""The ``medkd`` command: help, error paths with one clear line and exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from medkd.cli import main

CPU_2D = str(Path(__file__).resolve().parents[1] / "apps" / "bcp" / "cpu_2d.yaml")


def test_help_imports_no_heavy_optional_dependency():
    code = (
        "import sys; from medkd.cli import build_parser; build_parser().format_help(); "
        "print(any(m in sys.modules for m in ('pydicom', 'highdicom', 'streamlit', 'torch')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _err(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "medkd: error:" in err
    return err


def test_unknown_set_key_lists_valid_keys(capsys, tmp_path):
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(tmp_path), "--out", str(tmp_path / "r"),
                        "--set", "sed=2"])
    assert "'sed'" in err and "Did you mean 'seed'" in err and "Valid keys" in err


def test_missing_data_root_is_named(capsys, tmp_path):
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "r")])
    assert str(tmp_path / "nope") in err


def test_missing_config_file(capsys, tmp_path):
    err = _err(capsys, ["bcp", "train", "--config", str(tmp_path / "x.yaml"), "--data-root", str(tmp_path), "--out", str(tmp_path)])
    assert "x.yaml" in err and "not found" in err


def test_malformed_h5_is_named(capsys, tmp_path):
    from medkd.data.synthetic import write_synthetic_acdc

    root = write_synthetic_acdc(tmp_path / "acdc", n_train=4, n_val=1, n_test=1, n_slices=4, seed=0)
    first = (root / "train_slices.list").read_text().split()[0]
    with h5py.File(root / "data" / "slices" / f"{first}.h5", "w") as f:
        f["image"] = np.zeros((64, 64), np.float32)  # no "label"
    last = (root / "train_slices.list").read_text().split()[-1]  # an unlabelled slice: found before training
    with h5py.File(root / "data" / "slices" / f"{last}.h5", "w") as f:
        f["image"] = np.zeros((64, 64), np.float32)
        f["label"] = np.zeros((64, 60), np.uint8)
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "labeled=1", "--set", "pretrain_iterations=1", "--set", "selftrain_iterations=1"])
    assert f"{first}.h5" in err and "missing key 'label'" in err and "pretrain" not in err  # before any training
    (root / "data" / "slices" / f"{first}.h5").unlink()
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "labeled=1"])
    assert f"{first}" in err and "missing" in err.lower()  # a list entry without its file
    write_synthetic_acdc(root, n_train=4, n_val=1, n_test=1, n_slices=4, seed=0)
    with h5py.File(root / "data" / "slices" / f"{last}.h5", "w") as f:
        f["image"] = np.zeros((64, 64), np.float32)
        f["label"] = np.zeros((64, 60), np.uint8)
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "labeled=1"])
    assert f"{last}.h5" in err and "differs from label shape" in err


def test_eval_on_a_folder_that_is_no_run(capsys, tmp_path):
    err = _err(capsys, ["bcp", "eval", "--run", str(tmp_path), "--data-root", str(tmp_path)])
    assert "not a medkd run folder" in err


def test_unknown_net_name_suggests_close_matches(capsys, tmp_path):
    from medkd.data.synthetic import write_synthetic_acdc

    root = write_synthetic_acdc(tmp_path / "acdc", n_train=4, n_val=1, n_test=1, n_slices=4, seed=0)
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "net=bcp_unet2", "--set", "labeled=1"])
    assert "bcp_unet2d" in err


@pytest.mark.slow
def test_demo_quick_runs_end_to_end(tmp_path, capsys):
    assert main(["-q", "demo", "--out", str(tmp_path / "demo"), "--models", str(tmp_path / "models"), "--quick"]) == 0
    out = capsys.readouterr().out
    assert "overlay" in out and (tmp_path / "demo" / "overlay.png").is_file()
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert (tmp_path / "models" / "demo_acdc_bcp" / "configs" / "metadata.json").is_file()
    assert len(summary["dicom_seg"]) == 1 and Path(summary["dicom_seg"][0]).is_file()  # the MR series only
    report = (tmp_path / "demo" / "dicom_out" / "medkd_report.csv").read_text()
    assert "processed" in report and "not_selected" in report  # the CT series is left out by the rules
    gt = summary["grounded_teacher"]  # the Grounded Teacher step: adapted detector, bundle, one SR per MG image
    assert (tmp_path / "models" / "demo_mammo_gt" / "configs" / "metadata.json").is_file()
    assert set(gt["target_ap50"]) == {"source", "adapted"} and "Grounded Teacher" in out
    assert (tmp_path / "demo" / "mammo_out" / "medkd_report.csv").is_file()
    kd = summary["distill"]  # the distillation step: the BCP run teaches a fresh student, exported as a bundle
    assert (tmp_path / "models" / "demo_acdc_distilled" / "configs" / "metadata.json").is_file()
    assert 0.0 <= kd["student_dice"] <= 1.0 and kd["teacher_params"] > 0 and "Distillation" in out
    routed = summary["partition_students"]  # one student per modality, one routed bundle, the test images classified
    assert (tmp_path / "models" / "demo_lesion_routed" / "configs" / "metadata.json").is_file()
    assert routed["values"] == ["A", "B"] and routed["classified"] == 12 and "Routed students" in out
    rows = Path(routed["predictions"]).read_text().splitlines()
    assert len(rows) == 13 and {r.split(",")[-2] for r in rows[1:]} == {"A", "B"}  # partition column


@pytest.mark.parametrize(
    "override, key",
    [("lr=nan", "lr"), ("lr=inf", "lr"), ("lr=-1", "lr"), ("patch=[0,0]", "patch"), ("num_classes=0", "num_classes"),
     ("seed=-1", "seed"), ("num_workers=-1", "num_workers"), ("patch=[60,60]", "patch")],
)
def test_bad_training_values_exit_2_naming_the_key(capsys, tmp_path, override, key):
    from medkd.data.synthetic import write_synthetic_acdc

    root = write_synthetic_acdc(tmp_path / "acdc", n_train=4, n_val=1, n_test=1, n_slices=4, seed=0)
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "labeled=1", "--set", "pretrain_iterations=1", "--set", "selftrain_iterations=1",
                        "--set", override])
    assert key in err and not (tmp_path / "r" / "pretrain").exists()  # refused before any training


def test_too_few_items_for_a_batch_is_a_data_error(capsys, tmp_path):
    from medkd.data.synthetic import write_synthetic_acdc

    root = write_synthetic_acdc(tmp_path / "acdc", n_train=4, n_val=1, n_test=1, n_slices=2, seed=0)
    err = _err(capsys, ["bcp", "train", "--config", CPU_2D, "--data-root", str(root), "--out", str(tmp_path / "r"),
                        "--set", "labeled=1", "--set", "pretrain_iterations=1", "--set", "selftrain_iterations=1",
                        "--set", "val_interval=100"])
    assert "fewer than" in err and "set:" in err


def test_output_path_that_is_a_file_exits_2(capsys, tmp_path, run_2d, nifti_dir):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for argv in (["bcp", "predict", "--run", str(run_2d), "-i", str(nifti_dir), "-o", str(blocker)],
                 ["bcp", "predict", "--run", str(run_2d), "-i", str(nifti_dir / "case1.nii.gz"), "-o",
                  str(blocker / "case1_seg.nii.gz")]):
        assert str(blocker) in _err(capsys, argv)


def test_internal_error_prints_one_line_and_the_log_path(capsys, tmp_path, monkeypatch):
    from medkd import api

    def broken(*args, **kwargs):
        raise RuntimeError("something inside broke\nsecond line")

    monkeypatch.setenv("MEDKD_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setattr(api, "bcp_eval", broken)
    assert main(["bcp", "eval", "--run", str(tmp_path), "--data-root", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1
    assert err.startswith("medkd: internal error: RuntimeError: something inside broke; details in ")
    log = Path(err.rsplit("details in ", 1)[1])
    assert log.parent == tmp_path / "logs" and "Traceback" in log.read_text() and "second line" in log.read_text()


def test_unknown_key_error_that_is_not_a_registry_name_is_an_internal_error(capsys, tmp_path, monkeypatch):
    from medkd import api

    monkeypatch.setenv("MEDKD_LOG_DIR", str(tmp_path))
    monkeypatch.setattr(api, "bcp_eval", lambda *a, **k: {}["missing"])
    assert main(["bcp", "eval", "--run", str(tmp_path), "--data-root", str(tmp_path)]) == 1
    assert "internal error: KeyError" in capsys.readouterr().err


def test_pydicom_value_warnings_never_reach_the_console(capsys, caplog, monkeypatch):
    import logging

    from medkd import api

    def noisy(bundle):
        logging.getLogger("pydicom").warning("Invalid value for VR DA: '1945-03-17'")  # pydicom quotes values
        return "bundle text"

    monkeypatch.setattr(api, "bundle_info", noisy)
    with caplog.at_level(logging.DEBUG):
        assert main(["bundle", "info", "x"]) == 0
    assert "1945-03-17" not in capsys.readouterr().err + caplog.text


def _actions(parser) -> dict:
    """``{option: (required, default, choices)}`` of a parser's optional arguments."""
    return {a.option_strings[-1]: (a.required, a.default, a.choices) for a in parser._actions if a.option_strings}


def _subparser(parser, *path):
    for name in path:
        parser = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices[name]
    return parser


#: ``medkd bcp ...`` as before methods registered themselves: the same flags, defaults and choices
BCP_FLAGS = {
    "train": {"--help": (False, "==SUPPRESS==", None), "--config": (True, None, None),
              "--data-root": (True, None, None), "--out": (True, None, None), "--set": (False, [], None),
              "--resume": (False, False, None)},
    "eval": {"--help": (False, "==SUPPRESS==", None), "--run": (True, None, None), "--data-root": (True, None, None),
             "--split": (False, "test", None), "--json": (False, None, None),
             "--checkpoint": (False, "best", ("best", "last")),
             "--stage": (False, None, ("pretrain", "selftrain", "supervised"))},
    "predict": {"--help": (False, "==SUPPRESS==", None), "--run": (True, None, None), "--input": (True, None, None),
                "--output": (True, None, None), "--checkpoint": (False, "best", ("best", "last"))},
}


@pytest.mark.parametrize("action", sorted(BCP_FLAGS))
def test_bcp_subcommand_built_from_the_registry_keeps_its_flags(action):
    from medkd.cli import build_parser

    parser = build_parser()
    assert _actions(_subparser(parser, "bcp", action)) == BCP_FLAGS[action]
    choices = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    names = list(choices)  # the methods' subcommands first, then the shared tools
    assert names.index("bcp") < names.index("pipeline") < names.index("bundle") < names.index("app")


def test_a_registered_method_gets_its_subcommand(capsys, tmp_path):
    """A method registered at run time (as a plugin does) appears in ``medkd --help`` and runs, no CLI edit."""
    from medkd.methods import METHODS, Method, register_method

    def cli(sub):
        toy = sub.add_parser("toycli", help="a toy method")
        toy_sub = toy.add_subparsers(dest="action", required=True)
        train = toy_sub.add_parser("train")
        train.add_argument("--out", required=True)
        train.set_defaults(handler=lambda args: print(f"trained into {args.out}") or 0)

    register_method(Method(name="toycli", kind="detection", config_class="builtins:dict", train="builtins:print",
                           cli=cli, description="a toy method"))
    try:
        assert main(["toycli", "train", "--out", str(tmp_path)]) == 0
        assert f"trained into {tmp_path}" in capsys.readouterr().out
        with pytest.raises(SystemExit):
            main(["--help"])
        assert "toycli" in capsys.readouterr().out
    finally:
        METHODS._items.pop("toycli", None)


def test_a_method_with_a_broken_subcommand_is_left_out(capsys, caplog):
    from medkd.methods import METHODS, Method, register_method

    register_method(Method(name="brokencli", kind="detection", config_class="builtins:dict", train="builtins:print",
                           cli="medkd.no_such_module:add_parser"))
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
        out = capsys.readouterr().out
        assert "brokencli" not in out and "bcp" in out
        assert "'brokencli' left out of the command line: ModuleNotFoundError" in caplog.text
    finally:
        METHODS._items.pop("brokencli", None)


@pytest.mark.parametrize("action", ["eval", "predict"])
def test_bcp_on_a_run_of_another_method_names_that_method(capsys, tmp_path, action):
    from medkd.runs import write_run_info

    run = tmp_path / "toy_run"
    write_run_info(run, method="toy", kind="detection")
    (run / "config.yaml").write_text("detector: retinanet\n")  # not BCP's keys: never parsed as a BCP config
    argv = ["bcp", action, "--run", str(run)]
    argv += ["--data-root", str(tmp_path)] if action == "eval" else ["-i", str(tmp_path), "-o", str(tmp_path / "o")]
    err = _err(capsys, argv)
    assert str(run) in err and "a run of method 'toy'" in err and "medkd toy" in err and "Valid keys" not in err
