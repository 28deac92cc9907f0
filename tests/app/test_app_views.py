# SPDX-License-Identifier: Apache-2.0
"""App views registered by model kind: registration (direct, decorator, reference), validation, the choice by a
model's kind or its method's ``app_view``, and the message for an input the view's models do not take."""

from __future__ import annotations

import sys
import types
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

pytest.importorskip("streamlit")

from medkd.app.main import input_mismatch
from medkd.app.views import VIEWS, View, get_view, list_views, register_builtin_views, register_view


@pytest.fixture(autouse=True)
def _restore_views() -> Iterator[None]:
    """Every test starts and ends with the views (and methods) registered before it."""
    from medkd.methods.registry import METHODS

    saved = {r: (dict(r._items), dict(r._meta)) for r in (VIEWS, METHODS)}
    yield
    for registry, (items, meta) in saved.items():
        registry._items.clear()
        registry._items.update(items)
        registry._meta.clear()
        registry._meta.update(meta)


def test_segmentation_view_is_built_in_and_takes_images_and_volumes():
    register_builtin_views()
    view = get_view("segmentation")
    assert isinstance(view, View) and view.kind == "segmentation" and view.inputs == ("image2d", "volume")
    assert view.takes("volume") and view.takes("image2d") and not view.takes("video")
    assert "segmentation" in list_views() and list_views("segmentation") == ["segmentation"]


def test_a_package_registers_a_view_for_its_kind_without_editing_the_app():
    drawn = []

    @register_view("detection", inputs=("image2d",))
    def boxes(ctx):
        drawn.append(ctx)

    assert boxes.__name__ == "boxes"  # the decorator returns the function
    view = get_view("detection")
    assert view.render is boxes and view.inputs == ("image2d",) and view.title == "Detection"
    view("ctx")
    assert drawn == ["ctx"]
    forecast = register_view("forecasting", lambda ctx: None)  # direct call: default inputs of the kind
    assert forecast.inputs == ("video",) and get_view("forecasting") is forecast
    assert set(list_views()) >= {"segmentation", "detection", "forecasting"}


def test_view_given_as_a_reference_is_imported_on_first_use(monkeypatch):
    module = types.ModuleType("toy_view_module")
    seen = []
    module.render = lambda ctx: seen.append(ctx)
    monkeypatch.setitem(sys.modules, "toy_view_module", module)
    view = register_view("detection", "toy_view_module:render")
    assert view.render == "toy_view_module:render"
    view(1)
    assert seen == [1]


def test_register_view_checks_kind_and_inputs():
    with pytest.raises(KeyError, match="segmentation"):  # the known kinds are listed
        register_view("segmantation", lambda ctx: None)
    with pytest.raises(ValueError, match="image2d"):
        register_view("detection", lambda ctx: None, inputs=("photo",))
    with pytest.raises(ValueError):
        register_view("detection", lambda ctx: None, inputs=())
    assert "segmantation" not in VIEWS._items and "detection" not in VIEWS._items


def test_a_kind_without_a_view_is_a_key_error_naming_the_views():
    VIEWS._items.pop("forecasting", None)
    with pytest.raises(KeyError, match="no app view for forecasting models; registered views: .*segmentation"):
        get_view("forecasting")


def test_builtin_view_does_not_replace_a_view_registered_first():
    VIEWS._items.pop("segmentation", None)
    mine = register_view("segmentation", lambda ctx: None, title="Better segmentation")
    register_builtin_views()
    assert get_view("segmentation") is mine


def test_a_method_names_its_own_view_in_its_record():
    from medkd.methods.registry import Method, register_method

    special = register_view("detection", lambda ctx: None, name="polyp_boxes")
    default = register_view("detection", lambda ctx: None)
    register_method(Method(name="toy_named", kind="detection", config_class="builtins:dict", train="builtins:print",
                           app_view="polyp_boxes"))
    register_method(Method(name="toy_ref", kind="detection", config_class="builtins:dict", train="builtins:print",
                           app_view="medkd.app.segmentation:render"))
    register_method(Method(name="toy_plain", kind="detection", config_class="builtins:dict", train="builtins:print"))
    assert get_view("detection", "toy_named") is special
    by_ref = get_view("detection", "toy_ref")  # a method package below the app names its view by reference
    assert by_ref.render == "medkd.app.segmentation:render" and by_ref.kind == "detection"
    assert by_ref.inputs == ("image2d", "volume")
    assert get_view("detection", "toy_plain") is default and get_view("detection", "no_such_method") is default
    assert get_view("detection", None) is default


@pytest.mark.parametrize(
    ("input_kind", "inputs", "expected"),
    [
        ("video", ("image2d", "volume"), ("The upload 'clip.mp4' is a video, but 'unet' is a segmentation model, "
                                          "which takes a 2D image or a volume. To use it, upload a DICOM series")),
        ("volume", ("video",), ("The upload 'clip.mp4' is a volume, but 'unet' is a segmentation model, which takes "
                                "a video.")),
        ("image2d", ("volume",), "To use it, upload a volume"),
    ],
)
def test_input_mismatch_tells_what_the_model_takes(input_kind, inputs, expected):
    view = View("segmentation", "segmentation", print, inputs, "Segmentation")
    message = input_mismatch(view, SimpleNamespace(input_kind=input_kind, name="clip.mp4"), "unet")
    assert expected in message
    assert input_mismatch(view, SimpleNamespace(input_kind=inputs[0], name="x"), "unet") == ""


@pytest.mark.parametrize("name", ["medkd.app.views", "medkd.app.main"])
def test_docstring_examples_of_the_view_modules(name):
    """tests/test_doctests.py skips medkd.app (pages need a script run); these two modules need none."""
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted and result.failed == 0
