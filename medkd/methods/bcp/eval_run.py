# SPDX-License-Identifier: Apache-2.0
"""Evaluate a BCP run folder on a split with the paper's protocol (``medkd bcp eval``, BCP's ``Method.evaluate``).

Example:
    >>> summary = evaluate_run("runs/bcp", "data/acdc", split="test")  # doctest: +SKIP
    >>> sorted(summary["mean"])  # doctest: +SKIP
    ['asd', 'dice', 'hd95', 'jaccard']
"""

from __future__ import annotations

import json as jsonlib
from pathlib import Path
from typing import Any

__all__ = ["evaluate_run"]


def evaluate_run(
    run: str | Path,
    data_root: str | Path,
    *,
    split: str = "test",
    json: str | Path | None = None,
    checkpoint: str = "best",
    stage: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a run's final student (or ``stage``'s) on a split with the paper's protocol.

    Writes ``json`` (if given) and ``RUN/metrics_per_case_[<stage>_]<split>.csv``.

    Returns:
        ``{"mean": {...}, "per_class": {...}, "cases": [...], "empty_predictions": n, "run", "split", ...}``.

    Raises:
        DataError: not a BCP run folder, a missing checkpoint, or unreadable data.
    """
    from tqdm import tqdm

    from medkd.methods.bcp.data import eval_cases
    from medkd.methods.bcp.evaluate import evaluate_cases
    from medkd.methods.bcp.predict import checkpoint_path, load_run
    from medkd.metrics.seg import write_cases_csv

    cfg, model = load_run(run, checkpoint, stage=stage)
    device = next(model.parameters()).device
    bar = tqdm(desc=f"eval {split}", unit="case", disable=not progress)
    try:
        summary = evaluate_cases(model, eval_cases(cfg, Path(data_root), split), cfg, device, progress=bar)
    finally:
        bar.close()
    summary.update(
        run=str(run), split=split, checkpoint=str(checkpoint_path(run, cfg, checkpoint, stage)),
        dataset=cfg.dataset.value,
        method=cfg.method.value, selection_on_test=cfg.resolved_val_split() == "test",
    )
    write_cases_csv(summary, Path(run) / f"metrics_per_case_{stage + '_' if stage else ''}{split}.csv")
    if json is not None:
        Path(json).parent.mkdir(parents=True, exist_ok=True)
        Path(json).write_text(jsonlib.dumps(summary, indent=2))
    return summary
