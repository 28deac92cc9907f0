# SPDX-License-Identifier: Apache-2.0
"""The batch report: a row per input file and per series (per image with ``unit: instance``), written as
``medkd_report.{csv,json}``.

Example:
    >>> rows = [ReportRow("series", "processed", series_uid="1.2"), ReportRow("file", "ok", path="a.dcm")]
    >>> summary = PipelineSummary(rows, Path("r.csv"), Path("r.json"), Path("."))
    >>> summary.counts("series")["processed"], summary.counts("file")["ok"]
    (1, 1)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from medkd.io.atomic import write_text_atomic

__all__ = ["REPORT_FIELDS", "STATUSES", "PipelineSummary", "ReportRow", "write_report"]

STATUSES = ("processed", "unchanged", "skipped", "failed", "ok")
REPORT_FIELDS = ("kind", "status", "reason", "message", "path", "study_uid", "series_uid", "rule", "n_files",
                 "seconds", "outputs", "sop_uid")
#: report rows in this order: files, then series, then images (instance jobs)
_KIND_ORDER = {"file": 0, "series": 1, "instance": 2}


@dataclass
class ReportRow:
    """One line of the report: an input file (``kind == "file"``), a series (``kind == "series"``) or, in a
    ``unit: instance`` pipeline, an image job (``kind == "instance"``, ``path`` its file, ``sop_uid`` its
    ``SOPInstanceUID``)."""

    kind: str
    status: str
    reason: str = ""
    message: str = ""
    path: str = ""
    study_uid: str = ""
    series_uid: str = ""
    rule: str = ""
    n_files: int = 0
    seconds: float = 0.0
    outputs: list[str] = field(default_factory=list)
    sop_uid: str = ""


@dataclass
class PipelineSummary:
    """What a run did: report rows, counts by status, and where the report is."""

    rows: list[ReportRow]
    report_csv: Path
    report_json: Path
    out_dir: Path
    scan_seconds: float = 0.0

    def counts(self, kind: str = "series") -> dict[str, int]:
        """Rows of ``kind`` per status."""
        out = dict.fromkeys(STATUSES, 0)
        for row in self.rows:
            if row.kind == kind:
                out[row.status] = out.get(row.status, 0) + 1
        return out

    def line(self) -> str:
        """One-line summary for the terminal."""
        s, f, i = self.counts("series"), self.counts("file"), self.counts("instance")
        images = (
            f"images: {i['processed']} processed, {i['unchanged']} unchanged, {i['skipped']} skipped, "
            f"{i['failed']} failed; " if any(row.kind == "instance" for row in self.rows) else ""
        )
        return (
            f"{images}series: {s['processed']} processed, {s['unchanged']} unchanged, {s['skipped']} skipped, "
            f"{s['failed']} failed; files: {sum(f.values())} ({f['skipped']} skipped); report: {self.report_csv}"
        )


def write_report(rows: list[ReportRow], out_dir: Path, stem: str) -> tuple[Path, Path]:
    """Report as CSV and JSON (atomic); rows sorted files first, then series (by UID), then images (by path)."""
    rows.sort(key=lambda r: (_KIND_ORDER.get(r.kind, 3), r.series_uid if r.kind == "series" else r.path))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=REPORT_FIELDS)
    writer.writeheader()
    for row in rows:
        record = asdict(row)
        record["outputs"] = ";".join(record["outputs"])
        writer.writerow(record)
    csv_path, json_path = out_dir / f"{stem}.csv", out_dir / f"{stem}.json"
    write_text_atomic(csv_path, buf.getvalue())
    write_text_atomic(json_path, json.dumps([asdict(r) for r in rows], indent=1))
    return csv_path, json_path
