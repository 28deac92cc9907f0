# SPDX-License-Identifier: Apache-2.0
"""The clinician-facing Streamlit app (``medkd app``; ``streamlit run streamlit_app/app.py``).

Streamlit glue only: decoding lives in :mod:`medkd.io.upload`, rendering and measurements in :mod:`medkd.viz`,
inference in :mod:`medkd.inference`. The page is the shared widgets, then one view:

- :mod:`~medkd.app.study_input`: the input (an example or an upload: 2D image, volume or video);
- :mod:`~medkd.app.model_choice`: the models (zoo bundles present, or a folder), their kind, task and labels, and
  why a refused bundle was not loaded;
- :mod:`~medkd.app.views`: views registered by model kind (``register_view(kind, render)``); the chosen model's
  kind picks the view, which draws from a :class:`~medkd.app.views.ViewContext` and runs the models with
  :mod:`~medkd.app.run_models` (progress, cache, timings);
- :mod:`~medkd.app.segmentation`: the ``segmentation`` view.
"""

from __future__ import annotations

__all__ = ["DISCLAIMER"]

DISCLAIMER = "Research use only. Not for diagnostic use."
