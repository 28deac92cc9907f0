# SPDX-License-Identifier: Apache-2.0
"""``docs/README.md`` of a bundle: a model card with the MONAI model-zoo headings, filled from the run.

Headings: Model Overview, Data, Training configuration, Performance, Intended use, Limitations, How to run,
References. Performance comes from the run folder when it has any: evaluation files (``RUN/*.json`` written by
``medkd bcp eval --json``), the training summary (``RUN/train_summary.json``) or the validation lines of
``RUN/<stage>/metrics.jsonl``; otherwise the card says "not evaluated".

Example:
    >>> performance_section(Path("/no/such/run"), "selftrain").split(":")[0]
    'Not evaluated'
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from string import Template
from typing import Any

from medkd.bundle.layout import TEMPLATES_DIR

__all__ = ["performance_section", "eval_results", "validation_scores", "render_readme", "markdown_table"]

logger = logging.getLogger(__name__)

_METRICS = ("dice", "jaccard", "hd95", "asd")


def markdown_table(rows: Sequence[Sequence[Any]]) -> str:
    """Body rows of a Markdown table (the header is in the template)."""
    return "\n".join("| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.debug("skipping %s: %s", path, err)
        return None


def eval_results(run: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(file name, summary)`` of the evaluation files in the run folder (JSON with ``mean`` and ``per_class``)."""
    found = []
    for path in sorted(run.glob("*.json")) if run.is_dir() else []:
        data = _read_json(path)
        if isinstance(data, dict) and isinstance(data.get("mean"), dict) and isinstance(data.get("per_class"), dict):
            found.append((path.name, data))
    return found


def validation_scores(run: Path, stage: str) -> dict[str, Any] | None:
    """Best validation score of a stage: from ``train_summary.json``, else the best ``val/score`` line."""
    summary = _read_json(run / "train_summary.json")
    if isinstance(summary, dict):
        entry = summary.get("stages", {}).get(stage)
        if isinstance(entry, dict) and entry.get("best_score") is not None:
            return {"best_score": entry["best_score"], "best_iteration": entry.get("best_iteration"),
                    "source": "train_summary.json"}
    metrics = run / stage / "metrics.jsonl"
    best: dict[str, Any] | None = None
    if metrics.is_file():
        for line in metrics.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            score = row.get("val/score")
            if not isinstance(score, (int, float)) or not math.isfinite(score):
                continue
            if best is None or score > best["best_score"]:
                best = {"best_score": score, "best_iteration": row.get("iteration"), "source": f"{stage}/metrics.jsonl"}
    return best


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) and math.isfinite(value) else str(value)


def performance_section(run: Path, stage: str, *, val_split: str = "validation") -> str:
    """The Performance section's Markdown (see the module docstring)."""
    parts = []
    for name, data in eval_results(run):
        header = f"Evaluation `{name}`: split `{data.get('split', '?')}`, checkpoint `{data.get('checkpoint', '?')}`"
        rows = [[cls] + [_fmt(values.get(m, "")) for m in _METRICS] for cls, values in data["per_class"].items()]
        rows.append(["**mean**"] + [_fmt(data["mean"].get(m, "")) for m in _METRICS])
        table = "| class | Dice | Jaccard | HD95 | ASD |\n| --- | --- | --- | --- | --- |\n" + markdown_table(rows)
        parts.append(f"{header}:\n\n{table}")
    val = validation_scores(run, stage)
    if val is not None:
        parts.append(
            f"Best validation score (mean foreground Dice on the `{val_split}` split, used to select `best.pt`): "
            f"{_fmt(float(val['best_score']))} at iteration {val['best_iteration']} (from `{val['source']}`)."
            + (" The checkpoint was selected on the test split (the reference protocol), so test scores of `best.pt` "
               "are optimistic." if val_split == "test" else "")
        )
    if not parts:
        return ("Not evaluated: the run folder holds no evaluation file (`medkd bcp eval --json RUN/test.json`), "
                "no training summary and no validation scores.")
    return "\n\n".join(parts)


def render_readme(values: dict[str, Any]) -> str:
    """Fill ``templates/README.md`` (``$name`` placeholders; ``$$`` is a literal ``$``).

    Raises:
        KeyError: a placeholder has no value.
    """
    template = Template((TEMPLATES_DIR / "README.md").read_text(encoding="utf-8"))
    return template.substitute({k: str(v) for k, v in values.items()})
