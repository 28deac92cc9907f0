# SPDX-License-Identifier: Apache-2.0
"""``docs/README.md`` of a bundle: a model card with the MONAI model-zoo headings, filled from the run.

Headings: Model Overview, Data, Training configuration, Performance, Intended use, Limitations, How to run,
References. The method's prose comes from its :class:`~medkd.methods.bundle_spec.ModelCardText`; labels, data,
versions, weights, the MONAI commands and licences are the same for every method. Performance comes from the run
folder when it has any: evaluation files (``RUN/*.json`` with ``mean`` and ``per_class``, as the methods' ``eval
--json`` write them), the training summary (``RUN/train_summary.json``) or the validation lines of
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

__all__ = [
    "CODE_NOTE",
    "eval_results",
    "markdown_table",
    "performance_section",
    "render_readme",
    "validation_scores",
]

logger = logging.getLogger(__name__)

#: what every card says about the configs' code (after the method's equivalence note, if any)
CODE_NOTE = (
    "`inference.json` runs code (`_target_`, `$` expressions) when parsed: medkd reads it as\ndata first and refuses "
    "code outside its allowlist (`medkd bundle verify` lists it); MONAI's own commands run it\nunchecked, so run "
    "bundles with them only if you trust who made them."
)


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


def _metric_columns(results: Sequence[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    """The numeric ``mean`` keys of the evaluation files, in order of appearance, as their own headers."""
    keys: dict[str, None] = {}
    for _, data in results:
        keys.update((k, None) for k, v in data["mean"].items() if isinstance(v, (int, float)))
    return [(k, k) for k in keys]


def performance_section(
    run: Path, stage: str, *, val_split: str = "validation", metrics: Sequence[tuple[str, str]] = (),
    validation_score: str = "`val/score`", eval_command: str = "",
) -> str:
    """The Performance section's Markdown (see the module docstring).

    Args:
        run: run folder.
        stage: the exported stage (its ``metrics.jsonl`` is read).
        val_split: the split the validation score was computed on (``test`` adds a warning).
        metrics: ``(key, header)`` columns of the evaluation tables; default every numeric ``mean`` key.
        validation_score: what the validation score is, in words.
        eval_command: how to write an evaluation file, named when the run has none.
    """
    parts = []
    results = eval_results(run)
    columns = list(metrics) or _metric_columns(results)
    for name, data in results:
        header = f"Evaluation `{name}`: split `{data.get('split', '?')}`, checkpoint `{data.get('checkpoint', '?')}`"
        rows = [[cls] + [_fmt(values.get(k, "")) for k, _ in columns] for cls, values in data["per_class"].items()]
        rows.append(["**mean**"] + [_fmt(data["mean"].get(k, "")) for k, _ in columns])
        head = "| class | " + " | ".join(h for _, h in columns) + " |\n|" + " --- |" * (len(columns) + 1) + "\n"
        parts.append(f"{header}:\n\n{head}{markdown_table(rows)}")
    val = validation_scores(run, stage)
    if val is not None:
        parts.append(
            f"Best validation score ({validation_score} on the `{val_split}` split, used to select `best.pt`): "
            f"{_fmt(float(val['best_score']))} at iteration {val['best_iteration']} (from `{val['source']}`)."
            + (" The checkpoint was selected on the test split (the reference protocol), so test scores of `best.pt` "
               "are optimistic." if val_split == "test" else "")
        )
    if not parts:
        hint = f" ({eval_command})" if eval_command else ""
        return (f"Not evaluated: the run folder holds no evaluation file{hint}, no training summary and no validation "
                "scores.")
    return "\n\n".join(parts)


def render_readme(values: dict[str, Any]) -> str:
    """Fill ``templates/README.md`` (``$name`` placeholders; ``$$`` is a literal ``$``).

    Raises:
        KeyError: a placeholder has no value.
    """
    template = Template((TEMPLATES_DIR / "README.md").read_text(encoding="utf-8"))
    return template.substitute({k: str(v) for k, v in values.items()})
