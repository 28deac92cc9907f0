# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's data and training on tiny synthetic videos: load_split in both layouts and its frame cache, batches and
change-aware sampling, causal window indices, the loss falling within 60 CPU iterations (spec surgfutr.md §10 item
7), the copy-current and prior baselines (§7, §10 item 6) and bad input, each a DataError naming the file."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from medkd.config import config_from_dict
from medkd.data.surgical import SurgicalVideo
from medkd.data.synthetic.surgical_video import SyntheticSurgicalConfig, read_oracle, write_synthetic_surgical
from medkd.errors import DataError
from medkd.methods.surgfutr.config import SurgFUTRConfig
from medkd.methods.surgfutr.data import BatchSampler, future_indices, load_split, window_indices
from medkd.methods.surgfutr.scoring import PriorBaseline, copy_current_forecasts, score_arm
from medkd.methods.surgfutr.trainer import SurgFUTRTask

#: three videos of 45, 50 and 45 s (seed 0) at 32 x 32, written once per module in both layouts
SYNTHETIC = SyntheticSurgicalConfig(n_videos=3, duration=(40, 50), height=32, width=32)
#: a model of ~30 k parameters per branch; its window covers (4 - 1) * 2 + 2 = 8 s
TINY: dict[str, Any] = {
    "data": {"frame_size": [32, 32], "train": "1-3", "val": "1-3", "test": "1-3"},
    "model": {"width": 8, "feature_dim": 32, "state_dim": 16, "prototypes": 8, "clip_frames": 2, "window": 4,
              "clip_stride": 2, "delta": 2, "heads": 2, "freeze_prototypes": 10, "queue": 32, "queue_start": 20},
    "tasks": {"presence_deltas_s": [1, 2], "event_horizons_s": [5], "transition_horizons_min": [0.5]},
    "train": {"iterations": 60, "batch_size": 8, "warmup": 5, "lr": 0.003},
    "device": "cpu",
}
CHOLECT50 = {"layout": "cholect50", "dataset": "cholect50", "events": ["clipping=clipper"]}
LAYOUTS = ["cholec80", "cholect50"]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("surg_data")
    write_synthetic_surgical(folder, SYNTHETIC, seed=0)
    return folder


def make_cfg(cache: Path, layout: str = "cholec80", **sections: Any) -> SurgFUTRConfig:
    """:data:`TINY` in ``layout`` with its frames cached under ``cache``; ``sections`` update its sections."""
    data = {key: dict(value) if isinstance(value, dict) else value for key, value in TINY.items()}
    data["data"].update(cache_dir=str(cache), **(CHOLECT50 if layout == "cholect50" else {}))
    for key, value in sections.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return config_from_dict(SurgFUTRConfig, data)


# --- load_split and its cache -------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_load_split(root: Path, tmp_path: Path, layout: str) -> None:
    cfg = make_cfg(tmp_path, layout)
    data = load_split(cfg, root, "train")
    assert [v.name for v in data.videos] == (["video01", "video02", "video03"] if layout == "cholec80"
                                             else ["VID01", "VID02", "VID03"])
    assert len(data.phase_names) == 7 and not data.skipped
    if layout == "cholec80":
        assert len(data.presence_names) == 7 and data.tool_of is None  # the presence classes are the tools
        assert data.event_names == ("clipping", "cutting", "bagging")
    else:
        assert cfg.data.presence_key() == "triplet" and len(data.presence_names) == 54
        assert data.tool_names == ("grasper", "bipolar", "hook", "scissors", "clipper", "irrigator")
        assert data.event_names == ("clipping",)
        # tool_of maps each triplet "instrument,verb,target" to its instrument
        expected = [data.tool_names.index(name.split(",")[0]) for name in data.presence_names]
        assert data.tool_of is not None and data.tool_of.tolist() == expected
    for video in data.videos:
        n = video.num_seconds
        oracle = read_oracle(root / layout / "oracle" / f"{video.name}.json")
        assert 40 <= n <= 50 and n == len(oracle["phase"])
        assert video.frames.shape == (n, 32, 32, 3) and video.frames.dtype == np.uint8
        assert video.frames.std() > 5  # real pictures, not blank frames
        np.testing.assert_array_equal(video.phase, oracle["phase"])
        assert video.presence.shape == (n, len(data.presence_names))
        assert video.tools.shape == (n, len(data.tool_names))
        assert video.events.shape == (n, len(data.event_names))
        clipper = [t.lower() for t in data.tool_names].index("clipper")
        np.testing.assert_array_equal(video.events[:, 0], video.tools[:, clipper])  # clipping = Clipper presence
        assert {"rsd", "elapsed", "triplets@1s", "triplets@2s", "events@5s", "phase_next@0.5min",
                "phase_tta@0.5min"} <= set(video.targets)
        np.testing.assert_allclose(video.targets["rsd"], (n - 1 - np.arange(n)) / 60)
        assert video.change.shape == (n,) and video.change.dtype == bool
    assert data.seconds == sum(v.num_seconds for v in data.videos)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_frame_cache_is_reused(root: Path, tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = make_cfg(tmp_path / "cache", layout)
    first = load_split(cfg, root, "train")
    assert len(list((tmp_path / "cache").glob("*.npy"))) == 3

    def no_decoding(self: SurgicalVideo, **kwargs: Any) -> np.ndarray:
        raise AssertionError(f"{self.source} decoded again")

    monkeypatch.setattr(SurgicalVideo, "read_frames", no_decoding)
    second = load_split(cfg, root, "train")
    for a, b in zip(first.videos, second.videos):
        np.testing.assert_array_equal(np.asarray(a.frames), np.asarray(b.frames))
    with pytest.raises(AssertionError, match="decoded again"):  # another frame size is another cache entry
        load_split(make_cfg(tmp_path / "cache", layout, data={"frame_size": [24, 24]}), root, "train")


# --- batches and indices ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_batch_sampler_shapes_and_content(root: Path, tmp_path: Path, layout: str) -> None:
    cfg = make_cfg(tmp_path, layout)
    data = load_split(cfg, root, "train")
    sampler = BatchSampler(cfg, data, seed=0)
    vids, ts = sampler.anchors(8)
    batch = sampler.batch(vids, ts)
    m, c, e = cfg.model, len(data.presence_names), len(data.event_names)
    shapes = {k: tuple(v.shape) for k, v in batch.items()}
    assert shapes["frames"] == (8, m.window, m.clip_frames, 3, 32, 32) and batch["frames"].dtype == torch.uint8
    assert shapes["future"] == (8, m.clip_frames, 3, 32, 32)
    assert shapes["elapsed"] == shapes["rsd"] == shapes["phase"] == shapes["change"] == (8,)
    assert shapes["triplets@1s"] == shapes["triplets@2s"] == shapes["presence"] == (8, c)
    assert shapes["events@5s"] == shapes["events"] == (8, e)
    assert shapes["phase_next@0.5min"] == (8,) and shapes["phase_tta@0.5min"] == (8, 7)
    torch.testing.assert_close(batch["elapsed"], torch.as_tensor(ts / 60.0, dtype=torch.float32))
    # the frames are those of the causal window and of the future clip
    w_idx = window_indices(cfg, ts)
    f_idx = future_indices(cfg, ts, sampler.lengths[vids])
    for i, v in enumerate(vids):
        frames = data.videos[v].frames
        np.testing.assert_array_equal(batch["frames"][i].movedim(-3, -1).numpy(), frames[w_idx[i]])
        np.testing.assert_array_equal(batch["future"][i].movedim(-3, -1).numpy(), frames[f_idx[i]])
        assert bool(batch["change"][i]) == bool(data.videos[v].change[ts[i]])
        assert int(batch["phase"][i]) == int(data.videos[v].phase[ts[i]])
    it = iter(sampler)
    assert next(it)["frames"].shape[0] == cfg.train.batch_size


@pytest.mark.parametrize("fraction", [0.0, 0.5, 1.0])
def test_change_aware_sampling(root: Path, tmp_path: Path, fraction: float) -> None:
    cfg = make_cfg(tmp_path, train={"change_fraction": fraction})
    data = load_split(cfg, root, "train")
    # without change-aware sampling an anchor straddles a change with the split's base rate (t uniform per second)
    base = sum(int(v.change.sum()) for v in data.videos) / data.seconds
    assert 0.05 < base < 0.95
    sampler = BatchSampler(cfg, data, seed=1)
    hits = []
    for _ in range(200):
        vids, ts = sampler.anchors(16)
        assert ((ts >= 0) & (ts < sampler.lengths[vids])).all()
        hits.append([bool(data.videos[v].change[t]) for v, t in zip(vids, ts)])
    measured = float(np.mean(hits))
    expected = fraction + (1 - fraction) * base  # the change share plus the base rate of the rest
    assert abs(measured - expected) < 0.04
    if fraction == 1.0:
        assert measured == 1.0


def test_sampler_state_round_trip(root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    data = load_split(cfg, root, "train")
    sampler = BatchSampler(cfg, data, seed=3)
    sampler.anchors(8)
    state = sampler.state()
    expected = sampler.anchors(8)
    other = BatchSampler(cfg, data, seed=99)
    other.set_state(state)
    got = other.anchors(8)
    np.testing.assert_array_equal(got[0], expected[0])
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize(
    "model",
    [
        {"window": 4, "clip_stride": 2, "clip_frames": 2, "delta": 2},
        {"window": 8, "clip_stride": 4, "clip_frames": 4, "delta": 4},
        {"window": 3, "clip_stride": 1, "clip_frames": 5, "delta": 7},
        {"window": 1, "clip_stride": 3, "clip_frames": 1, "delta": 1},
    ],
)
def test_window_and_future_indices(model: dict[str, int]) -> None:
    cfg = config_from_dict(SurgFUTRConfig, {"model": {**model, "heads": 4}})
    m = cfg.model
    t = np.r_[0, 1, 5, np.arange(10, 200, 7), 299]
    w = window_indices(cfg, t)
    assert w.shape == (len(t), m.window, m.clip_frames)
    assert (w >= 0).all()
    assert (w <= t[:, None, None]).all()  # causal: never past t
    np.testing.assert_array_equal(w[:, -1, -1], t)  # the last clip ends at t
    ends = np.maximum(t[:, None] - (m.window - 1 - np.arange(m.window)) * m.clip_stride, 0)
    np.testing.assert_array_equal(w[..., -1], ends)  # clip ends s apart
    starts = ends - (m.clip_frames - 1)
    np.testing.assert_array_equal(w, np.maximum(starts[..., None] + np.arange(m.clip_frames), 0))
    n = 300
    for num_seconds in (n, np.full(len(t), n), np.r_[t[:-1] + 3, n]):  # one length, or one per anchor
        f = future_indices(cfg, t, num_seconds)
        assert f.shape == (len(t), m.clip_frames) and (f >= 0).all()
        np.testing.assert_array_equal(f[:, -1], np.minimum(t + m.delta, np.asarray(num_seconds) - 1))
        assert (f < np.asarray(num_seconds).reshape(-1, 1)).all()


# --- training (§10 item 7) ----------------------------------------------------------------------------------------


def _train(task: SurgFUTRTask, iterations: int) -> list[float]:
    """The engine's step, without checkpoints or validation: learning rate, loss, backward, clipping, step."""
    for module in task.trainable_modules().values():
        module.train()
    batches = task.batches(1)
    params = [p for module in task.trainable_modules().values() for p in module.parameters()]
    losses = []
    for it in range(1, iterations + 1):
        for group in task.optimizer.param_groups:
            group["lr"] = task.learning_rate(it)
        task.optimizer.zero_grad(set_to_none=True)
        loss, logs = task.compute_loss(next(batches), it)
        assert torch.isfinite(loss) and all(np.isfinite(v) for v in logs.values())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, task.cfg.train.grad_clip)
        task.optimizer.step()
        losses.append(float(loss.detach()))
    return losses


@pytest.mark.parametrize(
    "variant, label_free, terms",
    [
        ("surgfutr", 0, {"t_transition", "transition_kd", "feature_kd", "actdyn", "state", "presence", "rsd"}),
        ("surgfutr", 60, {"t_transition", "transition_kd", "feature_kd", "actdyn", "state"}),  # stage B alone
        ("no_teacher", 0, {"presence", "events", "rsd", "phase_tta"}),
        ("feature_regression", 0, {"feature_regression", "presence", "rsd"}),
    ],
)
def test_loss_falls_within_60_iterations(root: Path, tmp_path: Path, variant: str, label_free: int,
                                         terms: set[str]) -> None:
    cfg = make_cfg(tmp_path, variant=variant, train={"label_free_iterations": label_free})
    torch.manual_seed(0)
    data = load_split(cfg, root, "train")
    task = SurgFUTRTask(cfg, data, None, torch.device("cpu"))
    assert (task.teacher_net is not None) == (variant == "surgfutr")
    _, logs = task.compute_loss(next(task.batches(1)), 61)
    assert terms <= set(logs)
    if label_free:
        assert not {"presence", "rsd", "t_presence"} & set(task.compute_loss(next(task.batches(1)), 1)[1])
    losses = _train(task, 60)
    assert np.mean(losses[-10:]) < 0.9 * np.mean(losses[:10])


def test_task_freezes_and_normalises_prototypes(root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path)
    torch.manual_seed(0)
    task = SurgFUTRTask(cfg, load_split(cfg, root, "train"), None, torch.device("cpu"))
    protos = task.student.prototypes
    batch = next(task.batches(1))
    for it, frozen in ((1, True), (cfg.model.freeze_prototypes, True), (cfg.model.freeze_prototypes + 1, False)):
        with torch.no_grad():
            protos.weight.mul_(1.5)  # as if a step had moved them off the unit sphere
        task.optimizer.zero_grad(set_to_none=True)
        loss, _ = task.compute_loss(batch, it)
        torch.testing.assert_close(protos.weight.norm(dim=1), torch.ones(protos.count))  # normalised first
        loss.backward()
        grad = protos.weight.grad
        assert (grad is None or not grad.any()) == frozen
    assert task.queue.filled == min(3 * cfg.train.batch_size, cfg.model.queue)  # z_t of every teacher pass


# --- baselines (§7, §10 item 6) ------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", LAYOUTS)
def test_copy_current_is_high_dense_and_lower_on_change(root: Path, tmp_path: Path, layout: str) -> None:
    cfg = make_cfg(tmp_path, layout)
    data = load_split(cfg, root, "test")
    metrics = score_arm(copy_current_forecasts(data, cfg), data, cfg)
    assert metrics["tool_map"] > 0.6  # labels change slowly: copying the present scores high
    assert metrics["tool_map"] > metrics["tool_map_change"] + 0.1  # but not where the tools change
    if layout == "cholect50":
        assert metrics["triplet_map"] > metrics["triplet_map_change"]
    else:
        assert metrics["triplet_map"] is None  # no triplets in Cholec80: None, never faked
    assert metrics["rsd_mae"] is None and metrics["phase_outmae"] == 0.0  # copy-current predicts h everywhere
    assert metrics["videos"] == 3


def test_prior_baseline_rsd(root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, data={"train": "1,3", "test": "2"})
    train, test = load_split(cfg, root, "train"), load_split(cfg, root, "test")
    mean_minutes = np.mean([(v.num_seconds - 1) / 60 for v in train.videos])
    (forecast,) = PriorBaseline(train, cfg).forecasts(test)
    n = test.videos[0].num_seconds
    assert n > max(v.num_seconds for v in train.videos)  # so the prior reaches 0 before the end
    expected = np.maximum(0.0, mean_minutes - np.arange(n) / 60)
    np.testing.assert_allclose(forecast["rsd"], expected, atol=1e-9)
    assert forecast["rsd"][-1] == 0.0 and forecast["rsd"][0] > 0
    metrics = score_arm([forecast], test, cfg)
    assert metrics["rsd_mae"] == pytest.approx(np.abs(expected - test.videos[0].targets["rsd"]).mean(), abs=1e-5)


# --- bad input ----------------------------------------------------------------------------------------------------


def _copy(root: Path, tmp_path: Path, layout: str = "cholec80") -> Path:
    target = tmp_path / "data"
    shutil.copytree(root / layout, target / layout)
    return target


def _corrupt_video(folder: Path) -> str:
    path = folder / "cholec80" / "videos" / "video01.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(4096))
    return "videos/video01.mp4"


def _short_phase_file(folder: Path) -> str:
    path = folder / "cholec80" / "phase_annotations" / "video01-phase.txt"
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: 1 + 25 * 30]))  # header + 30 s of a 45 s video
    return "phase_annotations/video01-phase.txt"


def _no_tool_file(folder: Path) -> str:
    (folder / "cholec80" / "tool_annotations" / "video01-tool.txt").unlink()
    return "tool_annotations/video01-tool.txt"


def _unknown_phase(folder: Path) -> str:
    path = folder / "cholec80" / "phase_annotations" / "video01-phase.txt"
    lines = path.read_text().splitlines(keepends=True)
    lines[200] = "199\tSuturing\n"
    path.write_text("".join(lines))
    return "phase_annotations/video01-phase.txt"


def _missing_t50_frame(folder: Path) -> str:
    (folder / "cholect50" / "videos" / "VID01" / "000010.png").unlink()
    return "videos/VID01/000010.png"


def _broken_t50_labels(folder: Path) -> str:
    (folder / "cholect50" / "labels" / "VID01.json").write_text('{"video": 1, "fps": 1,')
    return "labels/VID01.json"


@pytest.mark.parametrize(
    "layout, breaker, message, sections",
    [
        ("cholec80", _corrupt_video, "OpenCV cannot open", {}),
        ("cholec80", _short_phase_file, "covers 30 s", {}),
        ("cholec80", _no_tool_file, "tool annotation file not found", {}),
        ("cholec80", _unknown_phase, "unknown phase name 'Suturing'", {}),
        ("cholec80", None, "shorter than one window", {"model": {"window": 20, "clip_stride": 4}}),
        ("cholec80", None, "Stapler", {"data": {"events": ["clipping=Stapler"]}}),
        ("cholect50", _missing_t50_frame, "frame image missing", {}),
        ("cholect50", _broken_t50_labels, "not valid JSON", {}),
        ("cholect50", None, "SpecimenBag", {"data": {"events": ["clipping=clipper", "bagging=SpecimenBag"]}}),
    ],
    ids=["corrupt_mp4", "phase_length", "no_tool_file", "unknown_phase", "short_video", "unknown_event_tool",
         "t50_missing_frame", "t50_broken_json", "t50_unknown_event_tool"],
)
def test_bad_input_names_the_file(root: Path, tmp_path: Path, layout: str, breaker: Callable[[Path], str] | None,
                                  message: str, sections: dict[str, Any]) -> None:
    folder = _copy(root, tmp_path, layout)
    bad = breaker(folder) if breaker else ("videos/video01.mp4" if layout == "cholec80" else "videos/VID01")
    data = {**sections.get("data", {}), "train": "1"}
    cfg = make_cfg(tmp_path / "cache", layout, **{**sections, "data": data})
    with pytest.raises(DataError, match=message) as err:
        load_split(cfg, folder, "train")
    assert str(folder / layout / bad) in str(err.value)
    assert err.value.path == str(folder / layout / bad)


def test_skip_bad_skips_a_short_video_with_a_reason(root: Path, tmp_path: Path) -> None:
    # a window of 48 s: videos 1 and 3 (45 s) are too short, video 2 (50 s) is kept
    cfg = make_cfg(tmp_path, model={"window": 12, "clip_stride": 4, "clip_frames": 4})
    assert cfg.past_seconds == 48
    with pytest.raises(DataError, match="shorter than one window"):
        load_split(cfg, root, "train")
    data = load_split(cfg, root, "train", skip_bad=True)
    assert [v.name for v in data.videos] == ["video02"]
    assert [Path(s["file"]).name for s in data.skipped] == ["video01.mp4", "video03.mp4"]
    assert all("shorter than one window" in s["reason"] for s in data.skipped)


def test_skip_bad_skips_a_corrupt_video_with_a_reason(root: Path, tmp_path: Path) -> None:
    folder = _copy(root, tmp_path)
    _corrupt_video(folder)
    cfg = make_cfg(tmp_path / "cache")
    data = load_split(cfg, folder, "train", skip_bad=True)
    assert [v.name for v in data.videos] == ["video02", "video03"]
    assert [Path(s["file"]).name for s in data.skipped] == ["video01.mp4"]
    assert "OpenCV cannot open" in data.skipped[0]["reason"]


def test_no_video_of_the_split(root: Path, tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, data={"test": "40-45"})
    with pytest.raises(DataError, match="no video of split 'test'") as err:
        load_split(cfg, root, "test")
    assert err.value.path == str(root / "cholec80")
    with pytest.raises(DataError, match="dataset folder not found"):
        load_split(make_cfg(tmp_path, data={"dataset": "cholec81"}), root, "train")
