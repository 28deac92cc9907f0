# SPDX-License-Identifier: Apache-2.0
"""The app's views, registered by model kind: the app draws the view of the chosen model's kind.

A view is a function ``render(ctx)`` drawing the main page with Streamlit calls for the models of one kind
(:data:`medkd.inference.KINDS`: ``segmentation``, ``detection``, ``forecasting``, ...) on one decoded input. It
declares which inputs its models take (:data:`medkd.io.upload.INPUT_KINDS`: ``image2d``, ``volume``, ``video``);
the app tells the user, instead of calling the view, when the upload is something else.

Three ways in, none of which edits ``medkd/app``:

* **a package outside medkd** (a ``medkd.plugins`` entry point, a script): ``register_view("detection", render)``,
  or ``@register_view("detection", inputs=("image2d",))`` on the function;
* **a method package inside medkd** (below the app in the layers, so it must not import ``medkd.app``): its
  :class:`~medkd.methods.Method` record names the view, ``app_view="medkd.methods.toy.view:render"`` (a
  ``module:attribute`` reference, imported on first use) or the name of a registered view; a method whose runs are
  of several kinds names one per kind, ``app_view={"classification": "medkd.distill.app_view:render"}`` (the
  kinds it names no view for get their kind's view);
* **the reference** may also be given to :func:`register_view` (``register_view("forecasting", "pkg.view:render")``),
  so registering imports neither Streamlit nor the view's module.

A view needs nothing from ``medkd.app``: :class:`ViewContext` hands it the input, the chosen models and the shared
run widget (:meth:`ViewContext.run`: progress, per-session cache, timings), the session's cache and folder, and a
message scrubber for errors. Views of the same name registered again replace the old one (with a warning); the
built-in views (``segmentation``; ``detection``: boxes on 2D images, :mod:`medkd.app.detection`) never replace a
view a plugin registered first.

Example:
    >>> def boxes(ctx):  # a detection page: ctx.run() gives each model's boxes, ctx.data the image
    ...     pass
    >>> register_view("detection", boxes, inputs=("image2d", "volume")).inputs
    ('image2d', 'volume')
    >>> get_view("detection").render is boxes
    True
    >>> _ = VIEWS._items.pop("detection")  # (keep the example out of the registry)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, overload

from medkd.app import DISCLAIMER
from medkd.registry import Registry

__all__ = [
    "DEFAULT_INPUTS",
    "VIEWS",
    "View",
    "ViewContext",
    "get_view",
    "list_views",
    "register_builtin_views",
    "register_view",
]

logger = logging.getLogger("medkd.app")

#: ``render(ctx)``: draws a view's page; a ``"package.module:attribute"`` string is imported on first use
Render = Callable[["ViewContext"], None]

#: the inputs a kind's models take when its view does not say (video for forecasting; images and volumes else)
DEFAULT_INPUTS: dict[str, tuple[str, ...]] = {
    "segmentation": ("image2d", "volume"),
    "detection": ("image2d", "volume"),
    "forecasting": ("video",),
}
_ALL_INPUTS = ("image2d", "volume", "video")


@dataclass(frozen=True)
class View:
    """A registered view.

    Attributes:
        name: registry name (the kind, for a kind's default view).
        kind: the model kind it shows.
        render: ``render(ctx)``, or a ``"package.module:attribute"`` reference to it.
        inputs: the input kinds its models take (``image2d``, ``volume``, ``video``).
        title: a human name for messages (``"Segmentation"``).
    """

    name: str
    kind: str
    render: Render | str
    inputs: tuple[str, ...]
    title: str

    def __call__(self, ctx: ViewContext) -> None:
        """Draw the view (importing ``render`` first if it is a reference)."""
        from medkd.methods.registry import resolve_ref

        resolve_ref(self.render)(ctx)

    def takes(self, input_kind: str) -> bool:
        """Whether the view's models take an input of ``input_kind``."""
        return input_kind in self.inputs


@dataclass
class ViewContext:
    """What a view draws from: the decoded input, the chosen models of its kind, and the shared widgets.

    Attributes:
        data: the decoded input (:class:`~medkd.io.upload.LoadedImage` or :class:`~medkd.io.upload.LoadedVideo`;
            ``data.input_kind`` says which).
        key: content key of the input (cache keys of anything computed from it).
        models: ``(name, predictor)`` of the chosen models, all of the view's kind, loaded and checked.
        view: the view being drawn.
        disclaimer: the research-use line, repeated on every download.
    """

    data: Any
    key: str
    models: list[tuple[str, Any]]
    view: View | None = None
    disclaimer: str = DISCLAIMER

    def run(self, verb: str = "Running", call: Callable[[Any, Any], Any] | None = None) -> list[Any]:
        """Each model's output on the input, with a progress bar, cached in the session, timed.

        Args:
            verb: the progress text (``"Segmenting"``, ``"Detecting"``).
            call: ``call(predictor, data) -> output``; default ``predictor(data.array)``.

        Returns:
            :class:`medkd.app.run_models.Result` per model, in the order of :attr:`models`.
        """
        from medkd.app.run_models import run_models

        return run_models(self.data, self.key, self.models, verb=verb, call=call)

    def cache(self, name: str) -> dict[Any, Any]:
        """A dict living as long as the browser session (views keep computed pictures and files here)."""
        from medkd.app.session import session_cache

        return session_cache(name)

    @property
    def workdir(self) -> Path:
        """The session's private temporary folder (removed with the session)."""
        from medkd.app.session import session_dir

        return session_dir()

    def safe_message(self, err: BaseException) -> str:
        """``err`` as text for the page: no patient value of the input, no server folder."""
        from medkd.app.run_models import safe_message

        return safe_message(err, self.data)


VIEWS: Registry = Registry("app view")


@overload
def register_view(
    kind: str, render: Render | str, *, inputs: Sequence[str] | None = None, name: str | None = None,
    title: str | None = None,
) -> View: ...


@overload
def register_view(
    kind: str, render: None = None, *, inputs: Sequence[str] | None = None, name: str | None = None,
    title: str | None = None,
) -> Callable[[Render], Render]: ...


def register_view(
    kind: str,
    render: Render | str | None = None,
    *,
    inputs: Sequence[str] | None = None,
    name: str | None = None,
    title: str | None = None,
) -> View | Callable[[Render], Render]:
    """Register ``render`` as the view of ``kind`` (or, with ``name``, as a view a method names in ``app_view``).

    Used directly (``register_view("detection", render)`` returns the :class:`View`) or as a decorator
    (``@register_view("detection")`` returns the function unchanged).

    Args:
        kind: a registered model kind (:func:`medkd.inference.list_kinds`).
        render: ``render(ctx: ViewContext)``, or a ``"package.module:attribute"`` reference to it.
        inputs: input kinds its models take; default :data:`DEFAULT_INPUTS` of the kind (all three if unknown).
        name: registry name; default ``kind`` (the kind's default view).
        title: a human title; default the name capitalised.

    Raises:
        KeyError: unknown kind (the message lists the known kinds).
        ValueError: an unknown input kind, or no input kind at all.
    """
    from medkd.inference.kinds import get_kind

    get_kind(kind)
    wanted = tuple(inputs) if inputs is not None else DEFAULT_INPUTS.get(kind, _ALL_INPUTS)
    unknown = [i for i in wanted if i not in _ALL_INPUTS]
    if unknown or not wanted:
        raise ValueError(f"view inputs must be some of {list(_ALL_INPUTS)}, got {list(wanted)}")
    key = name or kind

    def add(fn: Render | str) -> View:
        view = View(key, kind, fn, wanted, title or key.replace("_", " ").capitalize())
        VIEWS.register(key, kind=kind)(view)  # type: ignore[arg-type]
        return view

    if render is not None:
        return add(render)

    def deco(fn: Render) -> Render:
        add(fn)
        return fn

    return deco


def list_views(kind: str | None = None) -> list[str]:
    """Names of the registered views (of ``kind``, if given)."""
    register_builtin_views()
    return VIEWS.list() if kind is None else VIEWS.list(kind=kind)


def register_builtin_views() -> None:
    """Register the views medkd ships, unless a plugin registered one of the same name first (idempotent)."""
    if "segmentation" not in VIEWS:
        register_view("segmentation", "medkd.app.segmentation:render", inputs=("image2d", "volume"),
                      title="Segmentation")  # fmt: skip
    if "detection" not in VIEWS:
        register_view("detection", "medkd.app.detection:render", inputs=("image2d", "volume"), title="Detections")


def _method_view(kind: str, method: str | None) -> View | None:
    """The view a registered method names in its ``app_view`` (a view name or a ``module:attribute``)."""
    from medkd.methods.registry import METHODS

    if not method or method not in METHODS:
        return None
    record = METHODS.get(method)
    ref = getattr(record, "app_view", None)
    if isinstance(ref, Mapping):  # a method of several kinds: a view per kind
        ref = ref.get(kind)
    elif getattr(record, "kind", kind) != kind:  # its one view shows its main kind's models
        ref = None
    if not ref:
        return None
    if ":" in ref:
        return View(record.name if kind == record.kind else f"{record.name}:{kind}", kind, ref,
                    DEFAULT_INPUTS.get(kind, _ALL_INPUTS), record.name)
    if ref in VIEWS:
        return VIEWS.get(ref)  # type: ignore[return-value]
    logger.warning("method %s names app view %r, which is not registered; using the %s view", method, ref, kind)
    return None


def get_view(kind: str, method: str | None = None) -> View:
    """The view for models of ``kind`` (made by ``method``, if the method names its own view).

    Raises:
        KeyError: no view is registered for ``kind`` (the message names the registered views).
    """
    register_builtin_views()
    view = _method_view(kind, method)
    if view is not None:
        return view
    if kind in VIEWS and VIEWS.get(kind).kind == kind:  # type: ignore[attr-defined]
        return VIEWS.get(kind)  # type: ignore[return-value]
    for name in VIEWS.list(kind=kind):
        return VIEWS.get(name)  # type: ignore[return-value]
    raise KeyError(f"no app view for {kind} models; registered views: {', '.join(VIEWS.list()) or 'none'}")
