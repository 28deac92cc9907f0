# SPDX-License-Identifier: Apache-2.0
"""The app's run widget: each chosen model on the input, with a progress bar, cached per session, timed.

Every Streamlit rerun (a slider moved) finds the outputs in the session's cache, keyed by model name, weights
fingerprint and input content, so inference runs once per input and model. A model that fails shows a message
without the input's patient values or the session's server folder (the traceback goes to the log) and stops the
page.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import streamlit as st

from medkd.app.session import session_cache, session_dir
from medkd.errors import MedkdError

__all__ = ["Result", "run_models", "safe_message"]

logger = logging.getLogger("medkd.app")


@dataclass
class Result:
    """One model's output on the current input.

    Attributes:
        name: the model's name in the app. predictor: the loaded model. output: what it returned (a label map for
        segmentation, a dict for detection and forecasting). seconds: how long it took (the first time).
    """

    name: str
    predictor: Any
    output: Any
    seconds: float

    @property
    def mask(self) -> Any:
        """The output of a segmentation model (its label map)."""
        return self.output


def _default_call(predictor: Any, data: Any) -> Any:
    return predictor(data.array)


def run_models(
    data: Any,
    key: str,
    models: list[tuple[str, Any]],
    *,
    verb: str = "Running",
    call: Callable[[Any, Any], Any] | None = None,
) -> list[Result]:
    """Run each model on ``data`` once per session (progress bar ``"<verb> with NAME (i/n)…"``), timed.

    Args:
        data: the decoded input. key: its content key. models: ``(name, predictor)`` pairs.
        verb: the progress text. call: ``call(predictor, data) -> output``; default ``predictor(data.array)``.

    Returns:
        A :class:`Result` per model, in order. A failure shows ``st.error`` and stops the script (``st.stop``).
    """
    call = call or _default_call
    outputs = session_cache("masks")
    todo = [(n, p) for n, p in models if (n, p.weights_sha256, key) not in outputs]
    if todo:
        bar = st.progress(0.0, text=f"{verb}…")
        for i, (name, predictor) in enumerate(todo):
            bar.progress(i / len(todo), text=f"{verb} with {name} ({i + 1}/{len(todo)})…")
            start = time.perf_counter()
            try:
                output = call(predictor, data)
            except Exception as err:  # show the user a message, keep the traceback in the log
                logger.exception("inference failed with %s", name)
                st.error(f"The model '{name}' failed on this input: {safe_message(err, data)}")
                st.stop()
            outputs[(name, predictor.weights_sha256, key)] = (output, time.perf_counter() - start)
        bar.empty()
    return [Result(n, p, *outputs[(n, p.weights_sha256, key)]) for n, p in models]


def safe_message(err: BaseException, data: Any) -> str:
    """``Type: message`` of ``err`` without the input's patient values or the session's server folder."""
    from medkd.io.phi import phi_values, redact, safe_error

    datasets = data.dicom.datasets if getattr(data, "dicom", None) is not None else []
    text = redact(str(err), phi_values(datasets)) if isinstance(err, MedkdError) else safe_error(err, datasets)
    return text.replace(str(session_dir()), "…")
