# SPDX-License-Identifier: Apache-2.0
"""The app's views: a registry, so detection and video-forecasting pages plug in without touching the app."""

from __future__ import annotations

from collections.abc import Callable

from medkd.registry import Registry

__all__ = ["VIEWS", "register_builtin_views"]

#: view title -> ``render()`` drawing the page with Streamlit calls
VIEWS: Registry = Registry("app view")


def register_builtin_views() -> None:
    """Register the views medkd ships (idempotent)."""
    if "Segmentation" in VIEWS.list():
        return
    from medkd.app.segmentation import render

    VIEWS.register("Segmentation")(render)


def view(name: str) -> Callable[[], None]:
    """The render function of a registered view."""
    register_builtin_views()
    return VIEWS.get(name)
