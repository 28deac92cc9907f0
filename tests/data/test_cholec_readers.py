# SPDX-License-Identifier: Apache-2.0
"""Cholec80 and CholecT50 readers (spec surgfutr.md §5, §10 test 10): the synthetic writers round-trip through the
real readers, 1-fps alignment, and every kind of bad input gives one DataError naming the file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from medkd.data.surgical import (
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    WindowSpec,
    cholec80_files,
    cholect50_files,
    list_cholec80_videos,
    probe_video,
    read_cholec80,
    read_cholec80_video,
    read_cholect50,
    read_cholect50_labels,
    read_cholect50_video,
    read_phase_annotation,
    read_tool_annotation,
)
from medkd.data.synthetic.surgical_video import (
    SYNTHETIC_INSTRUMENTS,
    SyntheticSurgicalConfig,
    make_surgical_cases,
    synthetic_triplet_names,
    write_synthetic_surgical,
)
from medkd.errors import DataError

CFG = SyntheticSurgicalConfig(n_videos=2, duration=(40, 52), height=16, width=24, tail_frames=10, revisit_p=1.0)
EXACT = SyntheticSurgicalConfig(n_videos=1, duration=(40, 40), height=16, width=24)  # no partial last second


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> dict[str, Path]:
    return write_synthetic_surgical(tmp_path_factory.mktemp("surgical"), CFG, seed=3)


@pytest.fixture(scope="module")
def exact(tmp_path_factory) -> dict[str, Path]:
    return write_synthetic_surgical(tmp_path_factory.mktemp("exact"), EXACT, seed=1)


@pytest.fixture(scope="module")
def cases():
    return make_surgical_cases(CFG, seed=3)


@pytest.fixture
def c80(tmp_path, dataset) -> Path:
    """A private copy of the Cholec80 layout, to damage."""
    return Path(shutil.copytree(dataset["cholec80"], tmp_path / "cholec80"))


@pytest.fixture
def t50(tmp_path, dataset) -> Path:
    return Path(shutil.copytree(dataset["cholect50"], tmp_path / "cholect50"))


# --- round trips ------------------------------------------------------------------------------------------------


def test_cholec80_round_trip(dataset, cases):
    videos = read_cholec80(dataset["cholec80"])
    assert [v.name for v in videos] == ["video01", "video02"] == list_cholec80_videos(dataset["cholec80"])
    for video, case in zip(videos, cases):
        n = case.num_seconds
        assert video.num_seconds == n and video.dataset == "cholec80" and video.source_fps == 25.0
        # the video has one more, partial second (tail_frames) that the annotations lack: it is dropped
        assert probe_video(video.source).frame_count == 25 * n + CFG.tail_frames
        np.testing.assert_array_equal(video.labels["phase"], case.phase)
        np.testing.assert_array_equal(video.labels["tool"], case.tool)
        assert video.labels["phase"].dtype == np.int64 and video.labels["tool"].dtype == np.uint8
        assert video.class_names["phase"] == CHOLEC80_PHASES and video.class_names["tool"] == CHOLEC80_TOOLS
    assert len(cases[0].phase_transitions) >= 1


def test_cholect50_round_trip(dataset, cases):
    videos = read_cholect50(dataset["cholect50"], [1, "VID02"])
    for video, case in zip(videos, cases):
        n = case.num_seconds
        assert video.num_seconds == n and len(video.frame_files) == n  # the unlabelled extra PNG is not listed
        assert len(list(video.source.glob("*.png"))) == n + 1
        np.testing.assert_array_equal(video.labels["phase"], case.phase)
        np.testing.assert_array_equal(video.labels["instrument"], case.tool[:, : len(SYNTHETIC_INSTRUMENTS)])
        triplets = np.zeros((n, len(synthetic_triplet_names())), np.uint8)
        for s, ids in enumerate(case.triplets):
            triplets[s, ids] = 1
        np.testing.assert_array_equal(video.labels["triplet"], triplets)
        for key, column in (("verb", case.verb), ("target", case.target)):
            hot = np.zeros_like(video.labels[key])
            rows, cols = np.nonzero(column >= 0)
            hot[rows, column[rows, cols]] = 1
            np.testing.assert_array_equal(video.labels[key], hot)
        assert video.class_names["triplet"] == synthetic_triplet_names()
        assert video.class_names["phase"] == CHOLEC80_PHASES


def test_both_layouts_align_at_one_fps(dataset, cases):
    """Second t of the MP4 (frame 25 t) shows what PNG t shows, which is the render at t s."""
    mp4 = read_cholec80_video(dataset["cholec80"], 1)
    png = read_cholect50_video(dataset["cholect50"], 1)
    a, b = mp4.read_frames().astype(np.int16), png.read_frames().astype(np.int16)
    assert a.shape == b.shape == (cases[0].num_seconds, CFG.height, CFG.width, 3)
    np.testing.assert_array_equal(b, cases[0].render(np.arange(cases[0].num_seconds)))  # PNG: lossless
    # mp4v is lossy at 16 x 24 px, but MP4 second t is nearest to PNG t, not to its neighbours
    assert np.abs(a - b).mean(axis=(1, 2, 3)).max() < 20.0
    dist = np.stack([np.abs(a[1:-1] - b[1 + k : len(b) - 1 + k]).mean(axis=(1, 2, 3)) for k in (-1, 0, 1)])
    moving = np.minimum(np.abs(b[1:-1] - b[:-2]).mean(axis=(1, 2, 3)), np.abs(b[1:-1] - b[2:]).mean(axis=(1, 2, 3)))
    assert (moving > 4).sum() >= 10
    assert (dist.argmin(axis=0)[moving > 4] == 1).mean() > 0.9
    middle = mp4.read_frames(start=5, stop=8, size=(8, 12))
    assert middle.shape == (3, 8, 12, 3)


def test_exact_length_video(exact):
    video = read_cholec80(exact["cholec80"])[0]
    assert video.num_seconds == 40 == probe_video(video.source).num_seconds
    assert read_cholect50(exact["cholect50"])[0].num_seconds == 40


def test_window_longer_than_a_video_names_it(dataset):
    video = read_cholec80_video(dataset["cholec80"], 2)
    with pytest.raises(DataError, match=r"video02.mp4: the video lasts \d+ s at 1 fps, shorter than"):
        WindowSpec(past=60).anchors(video.num_seconds, video.source)
    assert len(WindowSpec(past=8, future=2, delta=3).anchors(video.num_seconds, video.source)) > 0


# --- Cholec80: bad input ----------------------------------------------------------------------------------------


def _rewrite(path: Path, edit) -> None:
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(edit(lines)))


@pytest.mark.parametrize("which, damage, file, problem", [
    ("video", lambda p: p.write_bytes(b"not a video" * 100), "video01.mp4", "OpenCV cannot open"),
    ("video", lambda p: p.unlink(), "video01.mp4", "video file not found"),
    ("phase", lambda p: p.unlink(), "video01-phase.txt", "phase annotation file not found"),
    ("tool", lambda p: p.unlink(), "video01-tool.txt", "tool annotation file not found"),
    # two seconds of phase rows missing: more than the last partial second
    ("phase", lambda p: _rewrite(p, lambda ls: ls[:-50]), "video01-phase.txt",
     r"phase annotation \(\d+ frames\) covers \d+ s at 1 fps, but video01.mp4 has \d+ frames"),
    # longer than the video
    ("phase", lambda p: _rewrite(p, lambda ls: ls + [f"{len(ls) - 1 + i}\tPreparation\n" for i in range(40)]),
     "video01-phase.txt", "only the video's last partial second may lack annotations"),
    ("tool", lambda p: _rewrite(p, lambda ls: ls[:-1]), "video01-tool.txt", r"tool annotation \(\d+ rows\) covers"),
    ("phase", lambda p: _rewrite(p, lambda ls: ls[:5] + [ls[5].replace("Preparation", "Prep")] + ls[6:]),
     "video01-phase.txt", "line 6: unknown phase name 'Prep'"),
    ("phase", lambda p: _rewrite(p, lambda ls: ["Frame\tStage\n"] + ls[1:]), "video01-phase.txt", "header"),
    ("phase", lambda p: _rewrite(p, lambda ls: ls[:3] + ls[4:]), "video01-phase.txt", "line 4: frame 3, expected 2"),
    ("phase", lambda p: _rewrite(p, lambda ls: ls[:3] + ["x\tPreparation\n"] + ls[4:]), "video01-phase.txt",
     "line 4: 'x' is not an integer"),
    ("phase", lambda p: _rewrite(p, lambda ls: ls[:3] + ["2\n"] + ls[4:]), "video01-phase.txt",
     "line 4: expected 2 fields"),
    ("phase", lambda p: p.write_text(""), "video01-phase.txt", "empty"),
    ("tool", lambda p: _rewrite(p, lambda ls: [ls[0].replace("Hook", "Hammer")] + ls[1:]), "video01-tool.txt",
     "header lists tools"),
    ("tool", lambda p: _rewrite(p, lambda ls: ls[:2] + [ls[2].replace("\t1", "\t2", 1).replace("\t0", "\t2", 1)]
                                + ls[3:]), "video01-tool.txt", "line 3: .* = 2, expected 0 or 1"),
    ("tool", lambda p: _rewrite(p, lambda ls: ls[:2] + ["26" + ls[2][2:]] + ls[3:]), "video01-tool.txt",
     "line 3: frame 26, expected 25"),
])  # fmt: skip
def test_cholec80_bad_input_names_the_file(c80, which, damage, file, problem):
    video, phase, tool = cholec80_files(c80, 1)
    damage({"video": video, "phase": phase, "tool": tool}[which])
    with pytest.raises(DataError, match=problem) as err:
        read_cholec80(c80, [1, 2])
    assert Path(err.value.path).name == file and str(err.value).startswith(str(err.value.path))


def test_cholec80_tolerates_a_missing_last_partial_second_only(exact, tmp_path):
    root = Path(shutil.copytree(exact["cholec80"], tmp_path / "c80"))
    _, phase, tool = cholec80_files(root, 1)
    # 40 s exactly: dropping a few frames of the last second keeps 40 sampled seconds; dropping the whole second fails
    _rewrite(phase, lambda ls: ls[:-3])
    assert read_cholec80_video(root, 1).num_seconds == 40
    _rewrite(phase, lambda ls: ls[:-22])
    with pytest.raises(DataError, match="video01-phase.txt: .*expected 40 s"):
        read_cholec80_video(root, 1)
    _rewrite(tool, lambda ls: ls[:-1])
    with pytest.raises(DataError, match="video01-phase.txt"):  # the first bad file is named
        read_cholec80_video(root, 1)


def test_cholec80_without_tools(c80):
    cholec80_files(c80, 1)[2].unlink()
    video = read_cholec80_video(c80, 1, tools=False)
    assert set(video.labels) == {"phase"}


def test_cholec80_missing_folders(tmp_path):
    with pytest.raises(DataError, match="no videos folder"):
        read_cholec80(tmp_path)
    (tmp_path / "videos").mkdir()
    with pytest.raises(DataError, match="holds no videoNN.mp4"):
        read_cholec80(tmp_path)


def test_annotation_parsers_directly(tmp_path):
    phase = tmp_path / "v-phase.txt"
    phase.write_text("Frame\tPhase\n0\tPreparation\n1\tGallbladderRetraction\n2\tClippingCutting\n")
    assert read_phase_annotation(phase).tolist() == [0, 6, 2]
    tool = tmp_path / "v-tool.txt"
    # columns in another order are mapped back to CHOLEC80_TOOLS
    order = list(reversed(CHOLEC80_TOOLS))
    tool.write_text("Frame\t" + "\t".join(order) + "\n0\t1\t0\t0\t0\t0\t0\t0\n25\t0\t0\t0\t0\t0\t0\t1\n")
    frames, presence = read_tool_annotation(tool)
    assert frames.tolist() == [0, 25] and presence[0].tolist() == [0, 0, 0, 0, 0, 0, 1]
    assert presence[1].tolist() == [1, 0, 0, 0, 0, 0, 0]


# --- CholecT50: bad input ---------------------------------------------------------------------------------------


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))


def _set(doc, *keys_value):
    *keys, last, value = keys_value
    for key in keys:
        doc = doc[key]
    doc[last] = value


def _drop_annotation(doc):
    del doc["annotations"]["7"]


@pytest.mark.parametrize("damage, file, problem", [
    (lambda p: p.unlink(), "VID01.json", "label file not found"),
    (lambda p: p.write_text("{not json"), "VID01.json", "not valid JSON"),
    (lambda p: _edit_json(p, lambda d: d.pop("categories")), "VID01.json", "missing key"),
    (lambda p: _edit_json(p, lambda d: _set(d, "fps", 25)), "VID01.json", "1 fps"),
    (lambda p: _edit_json(p, lambda d: _set(d, "num_frames", d["num_frames"] - 3)), "VID01.json",
     "beyond num_frames"),
    (lambda p: _edit_json(p, _drop_annotation), "VID01.json", r"lacks frame\(s\) \[7\]"),
    (lambda p: _edit_json(p, lambda d: _set(d, "annotations", "3", [[1, 2, 3]])), "VID01.json",
     r"annotations\[3\]: each entry must be 15 numbers"),
    (lambda p: _edit_json(p, lambda d: _set(d, "annotations", "4", [[-1] * 14 + [9]])), "VID01.json",
     r"annotations\[4\]: phase id 9 is outside 0 .. 6"),
    (lambda p: _edit_json(p, lambda d: _set(d, "annotations", "4", [[-1] * 15])), "VID01.json",
     r"annotations\[4\] gives no phase"),
    (lambda p: _edit_json(p, lambda d: _set(d, "annotations", "4", [[-1] * 14 + [0], [-1] * 14 + [1]])),
     "VID01.json", r"annotations\[4\] gives two phases"),
    (lambda p: _edit_json(p, lambda d: _set(d, "annotations", "5", [[70] + [-1] * 13 + [0]])), "VID01.json",
     "triplet id 70 is outside 0 .. 53"),
    (lambda p: _edit_json(p, lambda d: _set(d, "categories", "verb", {"0": "a", "2": "b"})), "VID01.json",
     "categories.verb ids must be 0 .. 1"),
])  # fmt: skip
def test_cholect50_bad_labels_name_the_file(t50, damage, file, problem):
    damage(cholect50_files(t50, 1)[1])
    with pytest.raises(DataError, match=problem) as err:
        read_cholect50(t50, [1, 2])
    assert Path(err.value.path).name == file


def test_cholect50_frame_count_must_match(t50):
    folder, labels = cholect50_files(t50, 1)
    n = read_cholect50_labels(labels).num_frames
    (folder / f"{n:06d}.png").unlink()  # the extra, unlabelled frame: still fine
    assert read_cholect50_video(t50, 1).num_seconds == n
    (folder / f"{n - 1:06d}.png").unlink()  # now a labelled frame lacks its image
    with pytest.raises(DataError, match=f"VID01.json: num_frames = {n}, but VID01/ holds {n - 1} frames"):
        read_cholect50_video(t50, 1)


def test_cholect50_frame_problems_name_the_file(t50):
    folder, _ = cholect50_files(t50, 2)
    (folder / "000003.png").unlink()
    with pytest.raises(DataError, match="000003.png: frame image missing"):
        read_cholect50_video(t50, 2)
    folder, _ = cholect50_files(t50, 1)
    (folder / "000002.png").write_bytes(b"broken")
    video = read_cholect50_video(t50, 1)
    with pytest.raises(DataError, match="000002.png: OpenCV cannot decode"):
        video.read_frames()
    assert video.read_frames(stop=2).shape[0] == 2
    shutil.rmtree(folder)
    with pytest.raises(DataError, match="VID01: frame folder not found"):
        read_cholect50_video(t50, 1)


def test_cholect50_missing_layout(tmp_path):
    with pytest.raises(DataError, match="no labels folder"):
        read_cholect50(tmp_path)
