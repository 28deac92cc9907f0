# SPDX-License-Identifier: Apache-2.0
"""The DICOM batch runner on hostile inputs (issue 8): header UIDs as paths, truncated slices, patient values in
messages, symbolic links, an output folder inside the input, stale ``.work`` folders, killed runs and untrusted
bundles. Each test fails on the runner before the fix."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest

from medkd.data.synthetic_dicom import write_dicom_series
from medkd.engine.predictor import Predictor
from medkd.errors import UntrustedBundleError
from medkd.io.labels import labels_from_names
from medkd.pipeline import PipelineConfig, run_pipeline

EVERYTHING = PipelineConfig(name="hostile", selection=[])
REPO = Path(__file__).resolve().parents[2]


def threshold_predictor(level: float = 150.0) -> Predictor:
    """A model-free segmenter (HU above ``level`` -> label 1)."""
    return Predictor(
        kind="segmentation", name="threshold", version="1", weights_sha256="0" * 64,
        labels=labels_from_names(["background", "lesion"]), run=lambda a: (a > level).astype(np.uint8),
        source=Path("."),
    )


def set_tags(paths: list[Path], **values: str) -> None:
    """Rewrite header values of every file (pydicom only warns about invalid ones, as a hostile writer would).

    A value pydicom cannot encode (non-ASCII in a UI element) is written as a placeholder of the same byte length,
    then patched in the file's bytes.
    """
    for path in paths:
        ds = pydicom.dcmread(path)
        patches = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for keyword, value in values.items():
                raw = value.encode("utf-8")
                if not value.isascii():
                    placeholder = "9" * len(raw)
                    patches.append((placeholder.encode(), raw))
                    value = placeholder
                setattr(ds, keyword, value)
            ds.save_as(path)
        data = path.read_bytes()
        for placeholder, raw in patches:
            assert data.count(placeholder) == 1
            data = data.replace(placeholder, raw)
        path.write_bytes(data)


def snapshot(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, tuple[int, int]]:
    """Every path under ``root`` (outside ``skip``) with its size and mtime."""
    out = {}
    for path in sorted(root.rglob("*")):
        if any(path == s or path.is_relative_to(s) for s in skip):
            continue
        st = path.lstat()
        out[str(path.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


def run(root: Path, out: Path, **kwargs) -> object:
    kwargs.setdefault("predictor", threshold_predictor())
    return run_pipeline(kwargs.pop("config", EVERYTHING), root, out, workers=kwargs.pop("workers", 0),
                        progress=False, **kwargs)


def rows(summary, kind: str) -> list:
    return [r for r in summary.rows if r.kind == kind]


def assert_outputs_exist(summary, out: Path) -> None:
    for row in rows(summary, "series"):
        assert all((out / rel).is_file() for rel in row.outputs), row
        if row.status in ("processed", "unchanged"):
            assert row.outputs


# ----------------------------------------------------------------------------------------------- UIDs as paths


def test_series_uid_that_is_an_absolute_path_never_touches_that_folder(tmp_path):
    victim = tmp_path / "victim"
    (victim / "keep").mkdir(parents=True)
    (victim / "keep" / "precious.txt").write_text("do not delete")
    root, out = tmp_path / "in", tmp_path / "out"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    evil = write_dicom_series(root / "evil", n_slices=3, rows=8, cols=8, seed=2)
    set_tags(evil.paths, SeriesInstanceUID=str(victim / "keep"))
    before = snapshot(tmp_path, skip=(out,))

    for _ in range(2):  # the rerun too
        summary = run(root, out)
        assert snapshot(tmp_path, skip=(out,)) == before
        by_uid = {r.series_uid: r for r in rows(summary, "series")}
        assert by_uid[good.series_uid].status in ("processed", "unchanged")
        bad = by_uid[str(victim / "keep")]
        assert (bad.status, bad.reason) == ("skipped", "invalid_uid")
        assert "SeriesInstanceUID" in bad.message and str(victim) not in bad.message
        assert_outputs_exist(summary, out)
    assert (victim / "keep" / "precious.txt").read_text() == "do not delete"


def test_study_uid_that_is_an_absolute_path_writes_nothing_outside(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    elsewhere = tmp_path / "elsewhere"
    evil = write_dicom_series(root / "evil", n_slices=3, rows=8, cols=8, seed=2)
    set_tags(evil.paths, StudyInstanceUID=str(elsewhere))
    before = snapshot(tmp_path, skip=(out,))

    summary = run(root, out)  # no exception: every problem is a row

    assert snapshot(tmp_path, skip=(out,)) == before and not elsewhere.exists()
    [series_row] = rows(summary, "series")
    assert (series_row.status, series_row.reason) == ("skipped", "invalid_uid")
    assert "StudyInstanceUID" in series_row.message and str(elsewhere) not in series_row.message
    file_rows = rows(summary, "file")
    assert len(file_rows) == 3 and {(r.status, r.reason) for r in file_rows} == {("skipped", "invalid_uid")}
    report = json.loads(summary.report_json.read_text())
    assert sorted(r["path"] for r in report if r["kind"] == "file") == sorted(r.path for r in file_rows)


def test_series_uid_dotdot_does_not_wipe_the_output_on_rerun(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    evil = write_dicom_series(root / "evil", n_slices=3, rows=8, cols=8, seed=2)
    set_tags(evil.paths, SeriesInstanceUID="..")
    first = run(root, out)
    assert {r.series_uid: r.status for r in rows(first, "series")}[good.series_uid] == "processed"
    done = out / good.study_uid / good.series_uid / "done.json"
    assert done.is_file()

    again = run(root, out)

    statuses = {r.series_uid: (r.status, r.reason) for r in rows(again, "series")}
    assert statuses == {good.series_uid: ("unchanged", ""), "..": ("skipped", "invalid_uid")}
    assert done.is_file() and (out / "medkd_report.csv").is_file()
    assert_outputs_exist(again, out)


@pytest.mark.parametrize(
    "keyword, value",
    [
        ("SeriesInstanceUID", "."),
        ("SeriesInstanceUID", "1.2/../../x"),
        ("SeriesInstanceUID", "1.2\\3"),
        ("SeriesInstanceUID", "1." + "2" * 70),  # longer than 64 characters
        ("SeriesInstanceUID", "1..2"),
        ("SeriesInstanceUID", "\u0661.\u0662"),  # Arabic-Indic digits are not ASCII digits
        ("StudyInstanceUID", ".."),
        ("StudyInstanceUID", ""),
        ("StudyInstanceUID", "1.2.3/"),
    ],
)
def test_invalid_uids_skip_the_series(tmp_path, keyword, value):
    root, out = tmp_path / "in", tmp_path / "out"
    evil = write_dicom_series(root / "evil", n_slices=2, rows=8, cols=8, seed=3)
    set_tags(evil.paths, **{keyword: value})
    before = snapshot(tmp_path, skip=(out,))
    summary = run(root, out)
    assert snapshot(tmp_path, skip=(out,)) == before
    [series_row] = rows(summary, "series")
    assert (series_row.status, series_row.reason) == ("skipped", "invalid_uid")
    assert keyword in series_row.message
    assert not [p for p in out.rglob("*") if p.is_dir()]  # no study or series folder at all


def test_empty_series_uid_is_a_file_level_skip(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    evil = write_dicom_series(root / "evil", n_slices=2, rows=8, cols=8, seed=3)
    set_tags(evil.paths, SeriesInstanceUID="")
    summary = run(root, out)
    assert not rows(summary, "series")
    assert {(r.status, r.reason) for r in rows(summary, "file")} == {("skipped", "non_image")}


def test_path_guard_stops_a_uid_that_slipped_through(tmp_path, monkeypatch):
    """Defence in depth: with the UID check disabled, the containment guard still refuses '..' as a folder."""
    from medkd.io import dicom_select

    monkeypatch.setattr(dicom_select, "series_problem", lambda series, root=None: None)
    root, out = tmp_path / "in", tmp_path / "out"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    evil = write_dicom_series(root / "evil", n_slices=3, rows=8, cols=8, seed=2)
    set_tags(evil.paths, SeriesInstanceUID="..")
    before = snapshot(tmp_path, skip=(out,))
    for _ in range(2):
        summary = run(root, out)
        statuses = {r.series_uid: (r.status, r.reason) for r in rows(summary, "series")}
        assert statuses[".."] == ("failed", "write_error")
        assert (out / good.study_uid / good.series_uid / "done.json").is_file()
        assert snapshot(tmp_path, skip=(out,)) == before
        assert_outputs_exist(summary, out)


# ----------------------------------------------------------------------------------------------- truncated slices


def _tag_offset(data: bytes, group: int, element: int) -> int:
    """Byte offset of an explicit-VR little-endian element's tag (after the file meta)."""
    offset = data.index(group.to_bytes(2, "little") + element.to_bytes(2, "little"), 132 + 12)
    return offset


@pytest.mark.parametrize(
    "where",
    [
        "inside_a_value",  # ends inside SliceLocation's value: the file ends inside a data element
        "before_pixel_data",  # a complete header with Rows/Columns, pixel data cut off
        "before_rows",  # at an element boundary before the image pixel module: header only, but its series has
        # image files
    ],
)
def test_slice_cut_inside_its_header_marks_the_series_truncated(tmp_path, where):
    root, out = tmp_path / "in", tmp_path / "out"
    series = write_dicom_series(root / "ct", n_slices=4, rows=8, cols=8, seed=1)
    victim = series.paths[2]
    data = victim.read_bytes()
    cut = {
        "inside_a_value": _tag_offset(data, 0x0020, 0x1041) + 8 + 2,
        "before_pixel_data": _tag_offset(data, 0x7FE0, 0x0010),
        "before_rows": _tag_offset(data, 0x0028, 0x0010),
    }[where]
    victim.write_bytes(data[:cut])

    summary = run(root, out)

    [series_row] = rows(summary, "series")
    assert (series_row.status, series_row.reason) == ("skipped", "truncated")
    rel = str(victim.relative_to(root))
    assert rel in series_row.message
    by_path = {r.path: r for r in rows(summary, "file")}
    assert len(by_path) == 4 and (by_path[rel].status, by_path[rel].reason) == ("skipped", "truncated")
    assert {(r.status, r.reason) for r in by_path.values()} == {("skipped", "truncated")}
    assert not (out / series.study_uid).exists()


def test_header_only_test_set_stays_non_image(tmp_path):
    """pydicom's TINY_ALPHA set: CT headers without pixel data or Rows/Columns in a series of such files only."""
    import shutil

    src = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "TINY_ALPHA"
    root = tmp_path / "in"
    shutil.copytree(src, root / "TINY_ALPHA")
    summary = run(root, tmp_path / "out")
    assert not rows(summary, "series")
    images = [r for r in rows(summary, "file") if "/IM" in r.path]
    assert images and {(r.status, r.reason) for r in images} == {("skipped", "non_image")}


# ----------------------------------------------------------------------------------------------- patient values


SECRETS = {"PatientName": "Doe^Jane", "PatientID": "MRN-775533", "PatientBirthDate": "1945-03-17",
           "PatientSex": "Female"}


def _all_text(out: Path, summary) -> str:
    texts = [p.read_text(errors="replace") for p in out.rglob("*") if p.suffix in (".csv", ".json", ".log")]
    return "\n".join(texts + [r.message for r in summary.rows])


@pytest.mark.parametrize("stage", ["model", "write", "volume"])
def test_error_messages_and_log_hold_no_patient_values(tmp_path, monkeypatch, stage):
    from medkd.io import dicom_seg, dicom_volume

    root, out = tmp_path / "in", tmp_path / "out"
    series = write_dicom_series(root / "ct", n_slices=3, rows=8, cols=8, seed=1)
    set_tags(series.paths, **SECRETS)
    quoted = "; ".join(f"Invalid value for {k}: {v!r}" for k, v in SECRETS.items())
    predictor = threshold_predictor()

    def leak(*args, **kwargs):
        raise ValueError(quoted)

    if stage == "model":
        predictor.run = leak
    elif stage == "write":
        monkeypatch.setattr(dicom_seg, "write_seg", leak)
    else:
        monkeypatch.setattr(dicom_volume, "load_series_volume", leak)
    summary = run(root, out, predictor=predictor)

    [series_row] = rows(summary, "series")
    expected = {"model": "model_error", "write": "write_error", "volume": "unreadable"}[stage]
    assert series_row.reason == expected and "ValueError" in series_row.message
    assert "PatientBirthDate" in series_row.message  # the keyword stays, the value goes
    text = _all_text(out, summary)
    assert "ValueError" in text
    for value in SECRETS.values():
        assert value not in text, value
    assert "Jane" not in text and "Doe" not in text


# ----------------------------------------------------------------------------------------------- links, OUT in IN


def test_every_path_gets_a_row_and_links_are_never_read_through(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    outside = write_dicom_series(tmp_path / "outside", n_slices=3, rows=8, cols=8, seed=2)
    links = root / "links"
    links.mkdir()
    (links / "inside_file.dcm").symlink_to(good.paths[0])
    (links / "inside_dir").symlink_to(root / "good", target_is_directory=True)
    (links / "outside_file.dcm").symlink_to(outside.paths[0])
    (links / "outside_dir").symlink_to(tmp_path / "outside", target_is_directory=True)
    (links / "broken.dcm").symlink_to(tmp_path / "missing.dcm")
    (links / "loop_a").symlink_to(links / "loop_b")
    (links / "loop_b").symlink_to(links / "loop_a")
    os.mkfifo(root / "pipe")

    summary = run(root, out)

    listed = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_symlink() or not p.is_dir())
    file_rows = rows(summary, "file")
    assert sorted(r.path for r in file_rows) == listed  # one row per path, links and the FIFO included
    by_path = {r.path: r for r in file_rows}
    for name in ("inside_file.dcm", "inside_dir", "outside_file.dcm", "outside_dir", "broken.dcm", "loop_a",
                 "loop_b"):
        assert (by_path[f"links/{name}"].status, by_path[f"links/{name}"].reason) == ("skipped", "symlink"), name
    assert "good/" in by_path["links/inside_file.dcm"].message
    assert "leaving the input folder" in by_path["links/outside_dir"].message
    assert by_path["pipe"].reason == "unreadable"
    [series_row] = rows(summary, "series")  # the outside series is never read, the inside one counted once
    assert series_row.series_uid == good.series_uid and series_row.n_files == 3 and series_row.status == "processed"


def test_output_folder_inside_the_input_is_not_rescanned(tmp_path):
    root = tmp_path / "in"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    out = root / "out"
    first = run(root, out)
    again = run(root, out)
    for summary in (first, again):
        assert sorted(r.path for r in rows(summary, "file")) == sorted(str(p.relative_to(root)) for p in good.paths)
    assert [(r.series_uid, r.status) for r in rows(again, "series")] == [(good.series_uid, "unchanged")]


def test_stale_work_folders_are_cleared(tmp_path):
    root, out = tmp_path / "in", tmp_path / "out"
    good = write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    (out / ".work" / "1.2.3.4").mkdir(parents=True)  # an empty one, as a run killed before writing leaves
    (out / ".work" / good.series_uid).mkdir()
    (out / ".work" / good.series_uid / "seg.dcm").write_bytes(b"half")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("x")
    (out / ".work" / "link").symlink_to(outside, target_is_directory=True)

    summary = run(root, out)

    assert not (out / ".work").exists()
    assert (outside / "keep.txt").read_text() == "x"
    assert [r.status for r in rows(summary, "series")] == ["processed"]


# ----------------------------------------------------------------------------------------------- trust


def test_untrusted_bundle_stops_the_run_before_any_series(tmp_path, monkeypatch):
    import medkd.inference as engine_predictor  # where the runner looks load_predictor up

    root, out = tmp_path / "in", tmp_path / "out"
    write_dicom_series(root / "good", n_slices=3, rows=8, cols=8, seed=1)
    model = tmp_path / "bundle"
    model.mkdir()
    calls = []

    def load(path, device="auto", *, trust=False):
        calls.append(trust)
        if not trust:
            raise UntrustedBundleError(Path(path) / "configs" / "inference.json", "run", "'$exec(...)' is code")
        return threshold_predictor()

    monkeypatch.setattr(engine_predictor, "load_predictor", load)
    with pytest.raises(UntrustedBundleError, match="inference.json: run"):
        run_pipeline(EVERYTHING, root, out, workers=0, progress=False, model=model)
    assert not [p for p in out.iterdir() if p.is_dir()]  # no series written
    summary = run_pipeline(EVERYTHING, root, out, workers=0, progress=False, model=model, trust_bundle=True)
    assert calls == [False, True] and [r.status for r in rows(summary, "series")] == ["processed"]


# ----------------------------------------------------------------------------------------------- killed runs


_KILL_SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from medkd.pipeline import PipelineConfig, run_pipeline
    from medkd.engine.predictor import Predictor
    from medkd.io.labels import labels_from_names

    def slow(array):
        Path(sys.argv[3]).write_text("inferring")
        time.sleep(120)
        return np.zeros(array.shape, np.uint8)

    if __name__ == "__main__":
        predictor = Predictor(kind="segmentation", name="slow", version="1", weights_sha256="0" * 64,
                              labels=labels_from_names(["background", "x"]), run=slow, source=Path("."))
        run_pipeline(PipelineConfig(name="kill"), sys.argv[1], sys.argv[2], workers=2, predictor=predictor,
                     progress=False)
""")


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has exited (an init that does not reap keeps it listed)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_decode_workers_exit_when_the_main_process_is_killed(tmp_path):
    root = tmp_path / "in"
    for i in range(6):
        write_dicom_series(root / f"s{i}", n_slices=3, rows=8, cols=8, seed=i)
    script, flag = tmp_path / "run.py", tmp_path / "inferring"
    script.write_text(_KILL_SCRIPT)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(root), str(tmp_path / "out"), str(flag)], env=env)
    workers: list[int] = []
    try:
        deadline = time.monotonic() + 120
        while not flag.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert flag.exists(), "the pipeline never reached inference"
        workers = [pid for pid in _children(proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
        assert len(workers) == 2
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [pid for pid in workers if _alive(pid)], "decode workers outlived the killed main process"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        for pid in workers:  # only the workers this test saw started
            if _alive(pid):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)


def test_bundle_with_config_code_is_refused_by_the_pipeline(run_2d, tmp_path, capsys):
    """End to end with a real exported bundle: a `$` expression in inference.json stops `medkd pipeline run` with
    exit 2 naming the key, before any series is processed and without running the code."""
    from medkd.bundle import export_bundle
    from medkd.cli import main

    bundle = export_bundle(run_2d, tmp_path / "models" / "tiny_2d")
    config = bundle / "configs" / "inference.json"
    marker = tmp_path / "pwned"
    data = json.loads(config.read_text())
    data["payload"] = f"$__import__('pathlib').Path({str(marker)!r}).write_text('ran')"
    config.write_text(json.dumps(data))
    root, out = tmp_path / "in", tmp_path / "out"
    write_dicom_series(root / "ct", n_slices=3, rows=16, cols=16, seed=1)
    argv = ["-q", "pipeline", "run", str(REPO / "pipelines" / "ct_any.yaml"), "-i", str(root), "-o", str(out),
            "--model", str(bundle), "--workers", "0", "--device", "cpu"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "payload" in err and "inference.json" in err and "Traceback" not in err
    assert not marker.exists() and not list(out.glob("*/*/done.json"))
