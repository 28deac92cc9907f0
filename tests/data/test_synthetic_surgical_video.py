# SPDX-License-Identifier: Apache-2.0
"""Synthetic laparoscopic video generator (spec surgfutr.md §6): ordered phases with variable durations, visible
progress, Markov tool episodes, events with lead-up cues, both on-disk layouts and the oracle."""

from __future__ import annotations

import json
from dataclasses import replace

import cv2
import numpy as np
import pytest

from medkd.data.surgical import CHOLEC80_PHASES, CHOLEC80_TOOLS, cholec80_files, cholect50_files
from medkd.data.synthetic.surgical_video import (
    DEFAULT_SPLITS,
    SYNTHETIC_EVENTS,
    SyntheticSurgicalConfig,
    dataset_steps,
    make_surgical_case,
    make_surgical_cases,
    read_oracle,
    write_synthetic_cholec80,
    write_synthetic_cholect50,
    write_synthetic_surgical,
)

SMALL = SyntheticSurgicalConfig(n_videos=2, duration=(40, 50), height=16, width=24)


@pytest.fixture(scope="module")
def default_cases():
    return make_surgical_cases()


def _runs(values: np.ndarray) -> list[tuple[int, int, int]]:
    """``(value, start, length)`` of each run."""
    edges = np.flatnonzero(np.diff(values) != 0) + 1
    starts = np.concatenate([[0], edges])
    ends = np.concatenate([edges, [len(values)]])
    return [(int(values[a]), int(a), int(b - a)) for a, b in zip(starts, ends)]


# --- labels -----------------------------------------------------------------------------------------------------


def test_default_dataset_shape(default_cases):
    assert [c.number for c in default_cases] == list(range(1, 13))
    assert sorted(sum(DEFAULT_SPLITS.values(), ())) == list(range(1, 13))
    for case in default_cases:
        assert 60 <= case.num_seconds <= 300 + 2 * 5  # a revisit adds at most 2 * min_phase
        assert (case.height, case.width) == (48, 64) and case.phase_names == CHOLEC80_PHASES
        assert case.tool.shape == (case.num_seconds, 7) and case.verb.shape == (case.num_seconds, 6)
    lengths = [c.num_seconds for c in default_cases]
    assert max(lengths) - min(lengths) > 60  # durations vary


def test_phases_are_ordered_with_variable_durations(default_cases):
    durations = {p: [] for p in range(7)}
    for case in default_cases:
        runs = _runs(case.phase)
        assert runs[0][0] == 0  # always starts with Preparation
        order = [p for p, _, _ in runs]
        # ordered, except at most one return to the previous phase (then the interrupted phase resumes)
        backs = [i for i in range(1, len(order)) if order[i] < order[i - 1]]
        assert len(backs) <= 1
        for i in backs:
            assert order[i + 1] == order[i - 1] and order[i] < order[i - 1]
        if not backs:
            assert all(length >= 5 for _, _, length in runs)
            for p, _, length in runs:
                durations[p].append(length)
        np.testing.assert_array_equal(case.phase_transitions, [start for _, start, _ in runs[1:]])
    assert np.std(durations[1]) > 0 and np.std(durations[3]) > 0


def test_skips_and_revisits_follow_their_probabilities():
    skipping = make_surgical_cases(replace(SyntheticSurgicalConfig(n_videos=10), skip_p=0.5))
    assert any(len(np.unique(c.phase)) < 7 for c in skipping)
    revisiting = make_surgical_cases(SyntheticSurgicalConfig(n_videos=4, revisit_p=1.0))
    for case in revisiting:
        order = [p for p, _, _ in _runs(case.phase)]
        assert sum(order[i] < order[i - 1] for i in range(1, len(order))) == 1


def test_steps_and_progress(default_cases):
    steps = dataset_steps(SyntheticSurgicalConfig())
    assert len(steps) == 7 and all(2 <= k <= 4 for k in steps)
    offsets = np.concatenate([[0], np.cumsum(steps)[:-1]])
    for case in default_cases:
        local = case.step - offsets[case.phase]
        assert ((local >= 0) & (local < np.asarray(steps)[case.phase])).all()  # steps belong to their phase
        assert len(case.step_names) == sum(steps)
        # progress rises within each phase (over its seconds) from 0 towards 1
        for p in np.unique(case.phase):
            prog = case.progress[case.phase == p]
            assert prog[0] == 0 and (np.diff(prog) > 0).all() and prog[-1] < 1
        assert set(case.phase_transitions) <= set(case.step_transitions)


def test_progress_is_visible_as_a_shrinking_region(default_cases):
    """The greenish target region is larger early in a phase than late in it."""
    shrink = []
    for case in default_cases[:4]:
        for p, start, length in _runs(case.phase):
            if length >= 20:
                frames = case.render([start + 0.0, start + length - 1.0]).astype(int)
                green = (frames[..., 1] > frames[..., 0] + 5) & (frames[..., 1] > frames[..., 2] + 30)
                area = green.sum(axis=(1, 2))
                shrink.append(area[0] > area[1])
    assert len(shrink) >= 8 and np.mean(shrink) > 0.9


def test_tools_are_markov_episodes_with_phase_dependent_rates(default_cases):
    present = np.concatenate([c.tool for c in default_cases])
    phase = np.concatenate([c.phase for c in default_cases])
    clipper, hook, bipolar = present[:, 4], present[:, 2], present[:, 1]
    assert clipper[phase == 2].mean() > 3 * clipper[phase != 2].mean()  # clipper in ClippingCutting
    assert hook[np.isin(phase, (1, 3))].mean() > 3 * hook[np.isin(phase, (4, 6))].mean()
    assert bipolar[phase == 5].mean() > 3 * bipolar[phase != 5].mean()
    # episodes: presence persists (runs, not independent coin flips)
    for case in default_cases:
        grasper_runs = [length for value, _, length in _runs(case.tool[:, 0]) if value == 1]
        assert np.mean(grasper_runs) > 3
    for case in default_cases:
        # verbs and targets exactly where a shaft is present, constant within an episode for the verb
        assert ((case.verb >= 0) == case.tool[:, :6].astype(bool)).all()
        assert ((case.target >= 0) == (case.verb >= 0)).all()
    targets = np.concatenate([c.target[c.target >= 0] for c in default_cases])
    verbs = np.concatenate([c.verb[c.verb >= 0] for c in default_cases])
    assert set(targets.tolist()) == {0, 1, 2} and set(verbs.tolist()) == {0, 1, 2}


def test_events_have_lead_up_cues(default_cases):
    counts = {name: 0 for name in SYNTHETIC_EVENTS}
    for case in default_cases:
        for name in SYNTHETIC_EVENTS:
            onsets, cues = case.events[name], case.cues[name]
            counts[name] += len(onsets)
            assert len(cues) == len(onsets) and (np.diff(onsets) > 0).all()
            lead = onsets - cues
            assert ((lead >= 2) & (lead <= 5) | (cues == 0)).all()
        assert (case.phase[case.events["clip"]] == 2).all()  # clips happen in ClippingCutting
        assert (case.tool[case.events["clip"], 4] == 1).all()  # with the clipper in
        assert (np.diff(case.events["bleed"]) >= 10).all()
        if len(case.events["bag"]):
            onset = case.events["bag"][0]
            assert case.phase[onset] == 4 and case.tool[onset, 6] == 1 and case.tool[:onset, 6].sum() == 0
    assert counts["clip"] >= 10 and counts["bleed"] >= 3 and counts["bag"] >= 8


@pytest.mark.parametrize("name", SYNTHETIC_EVENTS)
def test_cues_are_visible_before_the_event_and_only_then(default_cases, name):
    case = next(c for c in default_cases if len(c.events[name]) and c.cues[name][0] >= 2)
    onset, cue = int(case.events[name][0]), int(case.cues[name][0])
    without = replace(case, events={**case.events, name: case.events[name][1:]},
                      cues={**case.cues, name: case.cues[name][1:]},
                      _scene={**case._scene, "sites": {**case._scene["sites"], name: case._scene["sites"][name][1:]}})
    times = np.array([cue - 1.0, cue + 0.0, onset - 0.5, onset + 1.0])
    diff = np.abs(case.render(times).astype(int) - without.render(times).astype(int)).sum(axis=(1, 2, 3))
    assert diff[0] == 0  # nothing before the cue
    assert diff[2] > 0 and diff[3] > 0  # the cue near its end, then the event itself


def test_targets_match_the_drawn_regions():
    """The target of a present tool is the region drawn under its tip (rendered here without the tools)."""
    agree, liver_rows = [], []
    for case in make_surgical_cases(replace(SyntheticSurgicalConfig(n_videos=3), bleed_rate=0.0)):
        n = case.num_seconds
        bare = replace(case, verb=np.full_like(case.verb, -1))
        frames = bare.render(np.arange(n, dtype=float)).astype(int)
        tips = np.round(case.tips(np.arange(n, dtype=float))).astype(int)
        s, j = np.nonzero(case.verb >= 0)
        rows = np.clip(tips[s, j, 0], 0, case.height - 1)
        cols = np.clip(tips[s, j, 1], 0, case.width - 1)
        pixel = frames[s, rows, cols]
        green = (pixel[:, 1] > pixel[:, 0] + 5) & (pixel[:, 1] > pixel[:, 2] + 30)
        agree.append(green == (case.target[s, j] == 0))
        liver_rows.append(rows[case.target[s, j] == 1])
    assert np.concatenate(agree).mean() > 0.9
    assert np.concatenate(liver_rows).max() < 0.35 * 48  # the liver band is at the top


def test_seeded_and_pure():
    a = make_surgical_case(3, SMALL, seed=7)
    b = make_surgical_case(3, replace(SMALL, n_videos=9), seed=7)  # other videos do not change video 3
    c = make_surgical_case(3, SMALL, seed=8)
    for key in ("phase", "step", "tool", "verb", "target"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    np.testing.assert_array_equal(a.render([0.0, 7.3, 20.0]), b.render([0.0, 7.3, 20.0]))
    assert not np.array_equal(a.tool, c.tool) or not np.array_equal(a.phase, c.phase)
    # lazy rendering: any time, any order, same pixels
    many = a.render(np.arange(a.num_seconds, dtype=float))
    np.testing.assert_array_equal(many[[9, 2]], a.render([9.0, 2.0]))


@pytest.mark.parametrize("kwargs", [
    dict(n_videos=0), dict(duration=(10, 5)), dict(height=4), dict(n_phases=8), dict(n_phases=1),
    dict(skip_p=1.5), dict(steps_per_phase=(0, 2)), dict(lead_up=(3, 2)), dict(motion_fps=4),
    dict(tail_frames=25), dict(clips=(2, 1)),
])  # fmt: skip
def test_invalid_config(kwargs):
    with pytest.raises(ValueError, match="invalid SyntheticSurgicalConfig"):
        SyntheticSurgicalConfig(**kwargs)


def test_fewer_phases():
    cfg = replace(SMALL, n_phases=3, n_videos=3)
    for case in make_surgical_cases(cfg):
        assert case.phase.max() <= 2 and case.phase_names == CHOLEC80_PHASES[:3]
        assert len(case.events["bag"]) == 0  # GallbladderPackaging is phase 4


# --- writers ----------------------------------------------------------------------------------------------------


def test_cholec80_layout(tmp_path):
    cfg = replace(SMALL, motion_fps=5, tail_frames=7)
    root = write_synthetic_cholec80(tmp_path, cfg, seed=2)
    for case in make_surgical_cases(cfg, seed=2):
        video, phase, tool = cholec80_files(root, case.number)
        capture = cv2.VideoCapture(str(video))
        assert capture.get(cv2.CAP_PROP_FPS) == 25.0
        assert int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 25 * case.num_seconds + 7
        capture.release()
        lines = phase.read_text().splitlines()
        assert lines[0] == "Frame\tPhase" and len(lines) == 1 + 25 * case.num_seconds
        assert lines[1 + 25 * 3].split("\t") == [str(25 * 3), CHOLEC80_PHASES[case.phase[3]]]
        rows = tool.read_text().splitlines()
        assert rows[0].split("\t") == ["Frame", *CHOLEC80_TOOLS] and len(rows) == 1 + case.num_seconds
        assert rows[-1].split("\t")[0] == str(25 * (case.num_seconds - 1))
        oracle = read_oracle(root / "oracle" / f"video{case.number:02d}.json")
        np.testing.assert_array_equal(oracle["phase"], case.phase)
        assert [t["time"] for t in oracle["phase_transitions"]] == case.phase_transitions.tolist()
        assert oracle["events"]["clip"]["onsets"].tolist() == case.events["clip"].tolist()
    assert not list(root.rglob(".*partial*"))  # atomic writes left nothing behind


def test_cholect50_layout(tmp_path):
    root = write_synthetic_cholect50(tmp_path, SMALL)
    case = make_surgical_case(1, SMALL)
    folder, labels = cholect50_files(root, 1)
    assert sorted(p.name for p in folder.iterdir())[:2] == ["000000.png", "000001.png"]
    assert len(list(folder.iterdir())) == case.num_seconds
    doc = json.loads(labels.read_text())
    assert set(doc) == {"video", "fps", "num_frames", "categories", "annotations"}
    assert doc["video"] == 1 and doc["fps"] == 1 and doc["num_frames"] == case.num_seconds
    assert len(doc["categories"]["triplet"]) == 54 and len(doc["categories"]["instrument"]) == 6
    for s in (0, case.num_seconds // 2, case.num_seconds - 1):
        vectors = doc["annotations"][str(s)]
        assert all(len(v) == 15 and v[14] == case.phase[s] for v in vectors)
        assert sorted(v[1] for v in vectors if v[1] >= 0) == np.flatnonzero(case.verb[s] >= 0).tolist()


def test_both_layouts_from_the_same_videos(tmp_path):
    out = write_synthetic_surgical(tmp_path, replace(SMALL, n_videos=1))
    assert set(out) == {"cholec80", "cholect50"}
    assert (out["cholec80"] / "videos" / "video01.mp4").is_file()
    assert (out["cholect50"] / "videos" / "VID01" / "000000.png").is_file()
    a = json.loads((out["cholec80"] / "oracle" / "video01.json").read_text())
    b = json.loads((out["cholect50"] / "oracle" / "VID01.json").read_text())
    assert a == b
