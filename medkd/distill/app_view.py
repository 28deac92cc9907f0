# SPDX-License-Identifier: Apache-2.0
"""The app's page for ``classification`` models of medkd distill (``Method.app_view``): the image, each model's
class probabilities as bars, the label, and a CSV to take away.

PNG/JPEG uploads are scaled as the training reader scales them (8-bit values / 255). A routed model
(``partition_students``) needs the image's key value: the sidebar asks for it, offering the model's values and
starting at the DICOM ``Modality`` when the key is ``modality`` and that value is one of them; the answer says
which student classified the image. A volume is classified one slice at a time (a slice slider). Streamlit is
imported when the page is drawn, not when this module is imported.

Example:
    >>> import numpy as np
    >>> out = {"probabilities": np.array([0.1, 0.7, 0.2]), "label": 1, "partition": "MR"}
    >>> [(r["class"], r["probability"]) for r in probability_rows(out, model="msd", names=["a", "b", "c"])][:2]
    [('b', 0.7), ('c', 0.2)]
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["probability_rows", "render", "route_choices", "rows_csv"]


def probability_rows(output: Mapping[str, Any], *, model: str, names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per class, most probable first: model, class, probability (3 decimals), partition."""
    probs = np.asarray(output["probabilities"], np.float64).reshape(-1)
    order = np.argsort(-probs, kind="stable")
    return [{"model": model, "class": names[i] if i < len(names) else str(i), "probability": round(float(probs[i]), 3),
             "partition": output.get("partition", "")} for i in order]


def rows_csv(rows: Sequence[Mapping[str, Any]], disclaimer: str) -> bytes:
    """The rows as CSV bytes, the disclaimer as a first ``#`` line."""
    text = io.StringIO()
    text.write(f"# {disclaimer}\n")
    writer = csv.DictWriter(text, fieldnames=["model", "class", "probability", "partition"])
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode("utf-8")


def route_choices(models: Sequence[tuple[str, Any]]) -> dict[str, list[str]]:
    """``{key: values}`` the routed models among ``models`` need (values of every model with that key, in order).

    Example:
        >>> from types import SimpleNamespace as NS
        >>> route_choices([("a", NS(metadata={"route_key": "site", "route_values": ["1", "2"]})),
        ...                ("b", NS(metadata={"route_key": None}))])
        {'site': ['1', '2']}
    """
    keys: dict[str, list[str]] = {}
    for _, predictor in models:
        key = predictor.metadata.get("route_key")
        if key:
            values = keys.setdefault(key, [])
            values += [str(v) for v in predictor.metadata.get("route_values", []) if str(v) not in values]
    return keys


def _as_trained(data: Any, image: np.ndarray) -> np.ndarray:
    """The slice with the training reader's intensities: an uploaded PNG/JPEG (kept as 0..255 by the app) divided
    by 255 (by 65535 for 16-bit values), as :func:`~medkd.data.classification.load_image` does; others as they are."""
    if getattr(data, "kind", "") != "image":
        return image
    return image / (255.0 if float(image.max(initial=0.0)) <= 255.0 else 65535.0)


def render(ctx: Any) -> None:
    """Draw the classification page for ``ctx`` (a :class:`medkd.app.views.ViewContext` of ``classification``
    models)."""
    import pandas as pd
    import streamlit as st

    from medkd.viz.window import AUTO, apply_window, window_limits

    data = ctx.data
    n_slices = int(data.array.shape[0])
    st.sidebar.header("3 · Classify")
    index = 0
    if n_slices > 1:
        index = st.sidebar.slider("Slice", 1, n_slices, n_slices // 2 + 1, key="cls_slice") - 1
    meta: dict[str, str] = {}
    for key, values in route_choices(ctx.models).items():
        known = str(getattr(data, "modality", "") or "") if key == "modality" else ""
        start = values.index(known) if known in values else 0
        meta[key] = st.sidebar.selectbox(
            f"{key} of this image", values, index=start, key=f"cls_route_{key}",
            help=f"A routed model sends the image to the student of its {key}; choose the image's own value.")
    image = _as_trained(data, data.array[index])
    slice_ctx = dataclasses.replace(ctx, key=f"{ctx.key}:cls:{index}:{sorted(meta.items())}")
    results = slice_ctx.run(verb="Classifying", call=lambda predictor, _: predictor({"image": image[None], **meta}))

    low, high = window_limits(image, AUTO)
    st.image(apply_window(image, low, high), caption=f"{data.name}" + (f" · slice {index + 1}/{n_slices}"
                                                                       if n_slices > 1 else ""), width=320)
    rows: list[dict[str, Any]] = []
    st.subheader("Classification")
    for column, result in zip(st.columns(len(results)), results):
        names = [label.name for label in result.predictor.labels]
        mine = probability_rows(result.output, model=result.name, names=names)
        rows += mine
        with column:
            where = f" (student for {', '.join(f'{k}={v}' for k, v in meta.items())})" if mine[0]["partition"] else ""
            st.metric(f"{result.name}{where}", mine[0]["class"], f"p = {mine[0]['probability']:.3f}",
                      delta_color="off")
            st.bar_chart(pd.DataFrame({"probability": [r["probability"] for r in mine]},
                                      index=[r["class"] for r in mine]), horizontal=True)
            st.caption(f"{result.seconds:.2f} s")
    st.dataframe(pd.DataFrame(rows, columns=["model", "class", "probability", "partition"]), hide_index=True)
    st.caption(ctx.disclaimer)
    st.download_button("Probabilities (CSV)", rows_csv(rows, ctx.disclaimer), file_name="classification.csv",
                       mime="text/csv", key="cls_csv")
