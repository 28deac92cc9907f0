# SPDX-License-Identifier: Apache-2.0
"""medkd.methods.registry: Method records, METHODS (list, get with close matches, kinds) and lazy references."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from medkd.errors import MedkdError
from medkd.methods import METHODS, Method, get_method, list_methods, register_method, resolve_ref


@pytest.fixture
def toy():
    method = register_method(Method(name="toy_det", kind="detection", config_class="collections:OrderedDict",
                                    train=print, description="a toy detector"))
    yield method
    METHODS._items.pop("toy_det", None)


def test_bcp_is_registered_as_a_segmentation_method():
    assert "bcp" in list_methods() and "bcp" in list_methods("b*") and "bcp" in list_methods(kind="segmentation")
    bcp = get_method("bcp")
    assert isinstance(bcp, Method) and bcp.kind == "segmentation" and bcp.description


def test_a_registered_method_is_listed_by_name_and_kind(toy):
    assert get_method("toy_det") is toy
    assert list_methods("toy_*") == ["toy_det"] and "toy_det" in list_methods(kind="detection")
    assert "toy_det" not in list_methods(kind="segmentation")


def test_unknown_method_suggests_close_matches(toy):
    with pytest.raises(KeyError, match=r"unknown method 'bpc'\. Did you mean 'bcp'\?.*Known methods: .*bcp"):
        get_method("bpc")
    with pytest.raises(KeyError, match="Did you mean 'toy_det'"):
        get_method("toy_dte")


def test_resolve_imports_references_and_passes_objects_through(toy):
    from collections import OrderedDict

    assert toy.resolve("config_class") is OrderedDict and toy.resolve("train") is print
    with pytest.raises(MedkdError, match="'toy_det' provides no load_predictor"):
        toy.resolve("load_predictor")
    with pytest.raises(AttributeError, match="no part 'trian'"):
        toy.resolve("trian")
    assert resolve_ref("os.path:join.__name__") == "join"
    with pytest.raises(ValueError, match="package.module:attribute"):
        resolve_ref("os.path.join")
    with pytest.raises(ModuleNotFoundError):
        resolve_ref("medkd.no_such_module:x")


def test_records_are_frozen_and_keyword_only(toy):
    with pytest.raises(dataclasses.FrozenInstanceError):
        toy.kind = "segmentation"  # type: ignore[misc]
    with pytest.raises(TypeError):
        Method("x", "detection", dict, print)  # type: ignore[misc]


def test_the_registry_imports_no_torch():
    code = "import sys, medkd.methods as m; m.get_method('bcp'); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_method_may_make_several_kinds_and_its_runs_say_which(tmp_path):
    from medkd.errors import DataError
    from medkd.methods import load_run_predictor
    from medkd.runs import write_run_info

    distill = get_method("distill")
    assert distill.kinds == ("segmentation", "classification")
    assert "distill" in list_methods(kind="classification") and "bcp" not in list_methods(kind="classification")
    write_run_info(tmp_path, method="distill", kind="detection")
    with pytest.raises(DataError, match=r"kind 'detection'.*'segmentation' or 'classification'"):
        load_run_predictor(tmp_path)
    write_run_info(tmp_path, method="distill", kind="classification")
    with pytest.raises(DataError, match="student.json"):  # accepted kind: the classifier loader runs (and finds none)
        load_run_predictor(tmp_path)
