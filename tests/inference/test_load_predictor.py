# SPDX-License-Identifier: Apache-2.0
"""medkd.inference.load_predictor: run folders dispatch on run.json to their method, legacy BCP folders still load,
unknown methods and non-model folders are errors naming the folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkd.errors import DataError
from medkd.inference import PREDICTOR_SOURCES, Predictor, load_predictor
from medkd.methods import METHODS, Method, list_methods, register_method
from medkd.runs import write_run_info


@pytest.fixture
def fake_method():
    """A registered segmentation method whose loader records its calls."""
    calls = []

    def load(run, device, *, trust=False):
        calls.append((Path(run), str(device), trust))
        return Predictor("segmentation", "fake", "1", "0" * 64, [], run=lambda v: np.zeros(v.shape, np.uint8),
                         source=Path(run))

    register_method(Method(name="fake_seg", kind="segmentation", config_class="builtins:dict", train="builtins:print",
                           load_predictor=load))
    yield calls
    METHODS._items.pop("fake_seg", None)


def _copy(run: Path, to: Path) -> Path:
    return Path(shutil.copytree(run, to))


def test_legacy_bcp_run_without_run_json_loads(run_2d, nifti_dir):
    assert not (run_2d / "run.json").exists()
    pred = load_predictor(run_2d, "cpu")
    assert pred.kind == "segmentation" and pred.metadata["method"] == "bcp" and pred.spec.mode == "slices_2d"
    volume = np.random.default_rng(0).random((3, 40, 48)).astype(np.float32)
    pred.check(pred(volume), volume)


def test_run_json_dispatches_to_the_named_method(run_2d, tmp_path, fake_method):
    run = _copy(run_2d, tmp_path / "run")
    write_run_info(run, method="bcp", kind="segmentation")
    assert load_predictor(run, "cpu").metadata["method"] == "bcp"  # BCP's loader
    assert fake_method == []
    write_run_info(run, method="fake_seg", kind="segmentation")  # same folder, another method: its loader runs
    pred = load_predictor(run, "cpu", trust=True)
    assert pred.name == "fake" and fake_method == [(run, "cpu", True)]


def test_unknown_method_names_the_folder_and_the_known_methods(tmp_path):
    run = tmp_path / "toy_run"
    write_run_info(run, method="toy_detector", kind="detection")
    (run / "config.yaml").write_text("lr: 0.1\n")  # a config.yaml must not make it a BCP run
    with pytest.raises(DataError) as err:
        load_predictor(run)
    message = str(err.value)
    assert message.startswith(str(run)) and "'toy_detector'" in message
    assert all(name in message for name in list_methods()) and "bcp" in message


def test_kind_mismatch_between_run_json_and_method(tmp_path):
    run = tmp_path / "odd"
    write_run_info(run, method="bcp", kind="detection")
    with pytest.raises(DataError, match="kind 'detection'.*'segmentation'"):
        load_predictor(run)


def test_broken_run_json_is_a_data_error(tmp_path):
    run = tmp_path / "broken"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"kind": "segmentation"}))
    with pytest.raises(DataError, match="run.json"):
        load_predictor(run)


def test_missing_and_non_model_folders_are_named(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_predictor(tmp_path / "missing")
    with pytest.raises(DataError, match="metadata.json.*run.json") as err:
        load_predictor(tmp_path)
    assert str(err.value).startswith(str(tmp_path))
    assert {"bundle", "run"} <= set(PREDICTOR_SOURCES.list())
