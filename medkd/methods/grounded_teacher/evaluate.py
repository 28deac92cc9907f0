# SPDX-License-Identifier: Apache-2.0
"""``medkd gt eval``: a run's model on a target split, with COCO AP, lesion-level FROC and the reference's
image-level FROC (labelled as such), a FROC plot and the predictions.

Writes ``RUN/eval/<stage>_<split>/metrics.json``, ``froc.png`` and ``predictions.json`` (COCO results, original
pixels), and the metrics to ``--json`` if given. The JSON has top-level ``AP``, ``AP50``, ``AP10``, ``R@0.3``,
``CPM``, ``per_class``, the ``froc`` curve and ``gt_compat_image_level_froc``; ``oracle_selection`` is false (the
adapted model is the last EMA teacher of a fixed budget, never chosen on target data).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from medkd.inference import resolve_device
from medkd.io.atomic import write_text_atomic
from medkd.methods.grounded_teacher.data import ViewStore, load_domain, write_results
from medkd.methods.grounded_teacher.runs import final_stage, load_detector, load_run_config
from medkd.methods.grounded_teacher.source_stage import detect_store

__all__ = ["evaluate_run"]

logger = logging.getLogger(__name__)


def evaluate_run(run: str | Path, data_root: str | Path, *, split: str = "val", stage: str = "adapt",
                 json_path: str | Path | None = None, device: Any = None, plot: bool = True) -> dict[str, Any]:
    """Evaluate ``stage``'s model (``adapt``: the EMA teacher; ``source``: the source model) on the target
    dataset's ``split``; see the module docstring for what is written.

    Raises:
        DataError: not a GT run, the stage is not trained, or the split cannot be read.
    """
    from medkd.metrics.detection import detection_metrics

    run = Path(run)
    cfg = load_run_config(run)
    if stage == "adapt" and final_stage(cfg) == "source":
        logger.info("%s is a source_only run: evaluating its source model", run)
        stage = "source"
    model = load_detector(run, stage, resolve_device(device if device is not None else cfg.device))
    dataset = load_domain(Path(data_root), cfg.target.dataset, split, cfg.classes)
    store = ViewStore(dataset, cfg.image_size)
    found = detect_store(model, store)
    truths = [{"boxes": r.boxes, "labels": r.labels} for r in dataset.records]
    metrics = detection_metrics(found, truths, list(cfg.classes))
    metrics = {**metrics, "run": str(run), "stage": stage, "split": split, "dataset": cfg.target.dataset,
               "method": cfg.method.value, "mode": cfg.mode.value, "images": len(dataset.records),
               "lesions": int(sum(len(r.boxes) for r in dataset.records)), "oracle_selection": False}
    folder = run / "eval" / f"{stage}_{split}"
    folder.mkdir(parents=True, exist_ok=True)
    write_results(folder / "predictions.json", dict(zip((r.image_id for r in dataset.records), found)),
                  dataset.category_ids)
    if plot:
        from medkd.metrics.froc import lesion_froc
        from medkd.viz.froc import plot_froc

        curve = lesion_froc(found, truths)
        metrics["froc_plot"] = str(plot_froc({f"{cfg.method.value} ({stage})": curve}, folder / "froc.png",
                                             title=f"lesion-level FROC, {cfg.target.dataset} {split}"))
    text = json.dumps(metrics, indent=2)
    write_text_atomic(folder / "metrics.json", text)
    if json_path is not None:
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(json_path), text)
    return metrics
