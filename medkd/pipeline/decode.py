# SPDX-License-Identifier: Apache-2.0
"""Stage 3 of the batch: decode series into volumes, in-process or in spawn worker processes that die with the run.

:func:`load_volume_guarded` never raises (except interrupts): a bad series becomes ``(None, reason, message,
seconds)`` whose message holds no patient values. :func:`volumes` yields the series in order with at most ``2N``
in flight; a crashed worker (e.g. out of memory) fails only its series. Workers exit as soon as the main process is
gone, even after ``kill -9``.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

__all__ = ["exit_with_parent", "load_image_guarded", "load_volume_guarded", "volumes"]

_PARENT_POLL_S = 0.5  # how often a decode worker checks that the main process is alive

Loaded = tuple[Any, str, str, float]  # (volume or None, reason, message, seconds)


def _phi_of_files(files: Sequence[str]) -> set[str]:
    """Patient values of the files' headers (best effort), to redact an exception message about them."""
    import pydicom

    from medkd.io.phi import PHI_KEYWORDS, phi_values

    values: set[str] = set()
    for file in files:
        with contextlib.suppress(Exception):
            values |= phi_values([pydicom.dcmread(file, stop_before_pixels=True, force=True,
                                                  specific_tags=list(PHI_KEYWORDS))])
    return values


def load_volume_guarded(files: Sequence[str], min_slices: int) -> Loaded:
    """Worker entry: ``(volume or None, reason, message, seconds)``; never raises (except interrupts).

    Messages carry no patient values: :class:`~medkd.io.dicom_volume.SeriesError` messages name tags and files only,
    other exceptions are redacted with the files' patient values and their quoted literals.
    """
    from medkd.io.dicom_scan import safe_short
    from medkd.io.dicom_seg import quiet_phi_warnings
    from medkd.io.dicom_volume import SeriesError, load_series_volume
    from medkd.io.phi import redact

    start = time.perf_counter()
    try:
        with quiet_phi_warnings():
            return load_series_volume(files, min_slices=min_slices), "", "", time.perf_counter() - start
    except SeriesError as err:
        return None, str(err.reason), err.message, time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - one bad series must not stop the batch
        message = redact(safe_short(err), _phi_of_files(files))
        return None, "unreadable", message, time.perf_counter() - start


def load_image_guarded(files: Sequence[str], min_slices: int = 1) -> Loaded:
    """Worker entry of an instance job: ``(image or None, reason, message, seconds)`` for the one file in
    ``files`` (:func:`~medkd.pipeline.instances.load_instance_image`); never raises (except interrupts).

    ``min_slices`` is unused (same signature as :func:`load_volume_guarded`). Messages carry no patient values.
    """
    from medkd.io.dicom_scan import safe_short
    from medkd.io.dicom_seg import quiet_phi_warnings
    from medkd.io.dicom_volume import SeriesError
    from medkd.io.phi import redact
    from medkd.pipeline.instances import load_instance_image

    start = time.perf_counter()
    try:
        if len(files) != 1:
            raise SeriesError("unsupported", f"an instance job reads one file, got {len(files)}")
        with quiet_phi_warnings():
            return load_instance_image(files[0]), "", "", time.perf_counter() - start
    except SeriesError as err:
        return None, str(err.reason), err.message, time.perf_counter() - start
    except Exception as err:  # noqa: BLE001 - one bad image must not stop the batch
        message = redact(safe_short(err), _phi_of_files(files))
        return None, "unreadable", message, time.perf_counter() - start


def exit_with_parent(parent_pid: int) -> None:
    """Decode worker initializer: a daemon thread ends the worker as soon as the main process is gone.

    A pool worker otherwise outlives a main process killed with ``kill -9`` (its task queue holds a write end of
    its own pipe, so it never sees end-of-file), keeping its memory.
    """

    def watch() -> None:
        while True:
            time.sleep(_PARENT_POLL_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="medkd-parent-watch", daemon=True).start()


def volumes(
    jobs: list[tuple[Any, int]], workers: int, load: Callable[[Sequence[str], int], Loaded] | None = None
) -> Iterator[tuple[Any, Loaded]]:
    """Load ``(series, min_slices)`` volumes in order, in-process (``workers == 0``) or in ``workers`` spawn
    processes, at most ``2 * workers`` in flight. ``load`` (a module-level function, so spawn workers can import
    it): :func:`load_volume_guarded` (series jobs, the default) or :func:`load_image_guarded` (instance jobs)."""
    from medkd.io.dicom_scan import safe_short

    load = load_volume_guarded if load is None else load
    if workers <= 0:
        for series, min_slices in jobs:
            yield series, load([str(p) for p in series.files], min_slices)
        return
    ctx = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=exit_with_parent,
                               initargs=(os.getpid(),))
    with pool:
        pending: list[tuple[Any, Future]] = []
        queue = iter(jobs)
        for series, min_slices in queue:
            pending.append((series, pool.submit(load, [str(p) for p in series.files], min_slices)))
            if len(pending) >= 2 * workers:
                break
        while pending:
            series, future = pending.pop(0)
            nxt = next(queue, None)
            if nxt is not None:
                pending.append((nxt[0], pool.submit(load, [str(p) for p in nxt[0].files], nxt[1])))
            try:
                result = future.result()
            except Exception as err:  # noqa: BLE001 - a crashed worker (e.g. out of memory) fails only its series
                result = (None, "unreadable", f"worker failed: {safe_short(err)}", 0.0)
            yield series, result
