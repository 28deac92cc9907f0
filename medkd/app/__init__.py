# SPDX-License-Identifier: Apache-2.0
"""The clinician-facing Streamlit app (``medkd app``; ``streamlit run streamlit_app/app.py``).

Streamlit glue only: decoding lives in :mod:`medkd.io.upload`, rendering and measurements in :mod:`medkd.viz`,
inference in :mod:`medkd.engine.predictor`. Views are a registry (:data:`medkd.app.views.VIEWS`): detection and
video-forecasting views are added there as new pages.
"""

from __future__ import annotations

__all__ = ["DISCLAIMER"]

DISCLAIMER = "Research use only. Not for diagnostic use."
