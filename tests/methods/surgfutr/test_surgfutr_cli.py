# SPDX-License-Identifier: Apache-2.0
"""``medkd surgfutr train | eval | predict | stream`` end to end on tiny synthetic Cholec80-layout videos."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from medkd.cli import main
from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, write_synthetic_cholec80

ROOT = Path(__file__).resolve().parents[3]
PRESET = ROOT / "apps" / "surgfutr" / "cpu_synthetic.yaml"
TINY = ["train.iterations=6", "train.val_interval=6", "train.batch_size=4", "model.width=8", "model.feature_dim=32",
        "model.state_dim=16", "model.window=4", "model.freeze_prototypes=2", "model.queue_start=2",
        "data.train=1-2", "data.val=3", "data.test=3-4", "log_interval=2"]


@pytest.fixture(scope="module")
def sf(tmp_path_factory):
    """Four short synthetic videos and a 6-iteration run trained through the CLI."""
    base = tmp_path_factory.mktemp("surgfutr_cli")
    data = base / "data"
    write_synthetic_cholec80(data / "cholec80", SyntheticSurgicalConfig(n_videos=4, duration=(40, 50)), seed=0)
    run = base / "run"
    sets = [*TINY, f"data.cache_dir={base / 'cache'}"]
    code = main(["-q", "surgfutr", "train", "--config", str(PRESET), "--data-root", str(data), "--out", str(run),
                 *[a for s in sets for a in ("--set", s)]])
    assert code == 0
    return {"data": data, "run": run, "base": base}


def test_train_writes_the_run_folder(sf):
    run = sf["run"]
    assert json.loads((run / "run.json").read_text())["method"] == "surgfutr"
    assert (run / "train" / "last.pt").is_file() and (run / "classes.json").is_file()
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["iterations"] == 6 and summary["parameters"]["teacher"] > 0


def test_eval_json_has_one_object_per_arm_with_the_same_keys(sf, tmp_path):
    out = tmp_path / "m.json"
    assert main(["surgfutr", "eval", "--run", str(sf["run"]), "--data-root", str(sf["data"]), "--split", "test",
                 "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    keys = ("rsd_mae", "phase_wmae", "phase_inmae", "phase_outmae", "tool_map", "tool_map_change")
    for arm in ("surgfutr", "copy_current", "prior"):
        assert set(keys) <= set(m[arm]), arm
    assert m["surgfutr"]["variant"] == "surgfutr"
    assert m["copy_current"]["rsd_mae"] is None  # copy-current has no remaining-time prediction
    assert m["copy_current"]["phase_outmae"] == 0.0  # it always says "no change within h"
    assert 0.0 <= m["surgfutr"]["tool_map"] <= 1.0 and m["prior"]["rsd_mae"] >= 0.0
    assert m["surgfutr"]["triplet_map"] is None  # Cholec80 has no triplets: null, never faked


def test_predict_writes_one_row_per_analysed_second(sf, tmp_path):
    video = sf["data"] / "cholec80" / "videos" / "video04.mp4"
    out = tmp_path / "f.csv"
    assert main(["surgfutr", "predict", "--run", str(sf["run"]), "-i", str(video), "-o", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    labels = (sf["data"] / "cholec80" / "phase_annotations" / "video04-phase.txt").read_text().splitlines()
    assert len(rows) == (len(labels) - 1 + 24) // 25
    assert [int(r["second"]) for r in rows[:3]] == [0, 1, 2]


def test_stream_prints_forecasts_and_writes_the_csv(sf, tmp_path, capsys):
    video = sf["data"] / "cholec80" / "videos" / "video04.mp4"
    out = tmp_path / "live.csv"
    assert main(["surgfutr", "stream", "--run", str(sf["run"]), "-i", str(video), "-o", str(out),
                 "--max-seconds", "12"]) == 0
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(printed) == 12 and json.loads(printed[0])["second"] == 0
    assert len(list(csv.DictReader(out.open()))) == 12


def test_bad_video_exits_2_naming_it(sf, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\x00not a video" * 50)
    assert main(["surgfutr", "predict", "--run", str(sf["run"]), "-i", str(bad), "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "Traceback" not in err


def test_unknown_set_key_is_a_config_error(sf, tmp_path, capsys):
    assert main(["surgfutr", "train", "--config", str(PRESET), "--data-root", str(sf["data"]), "--out",
                 str(tmp_path / "r"), "--set", "model.protoypes=8"]) == 2
    assert "protoypes" in capsys.readouterr().err
