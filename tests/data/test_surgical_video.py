# SPDX-License-Identifier: Apache-2.0
"""Video decoding at a target rate, clip windows and the on-disk feature cache (medkd/data/surgical/video.py,
windows.py, feature_cache.py; spec surgfutr.md §3, §5)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from medkd.data.surgical.feature_cache import FeatureCache, cache_key, file_identity, weights_digest
from medkd.data.surgical.video import (
    SurgicalVideo,
    frames_at_rate,
    iter_video_frames,
    probe_video,
    read_frame_image,
    read_video_frames,
    resize_frame,
)
from medkd.data.surgical.windows import WindowSpec, gather_window, window_samples
from medkd.errors import DataError



def _write_video(path: Path, n_frames: int, fps: float = 25.0, size: tuple[int, int] = (24, 32)) -> Path:
    """Flat frames whose blue and green levels encode the frame index (16 levels each, robust to the lossy codec)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (size[1], size[0]))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.full((*size, 3), 128, np.uint8)
        frame[..., 0], frame[..., 1] = 16 * (i % 16) + 8, 16 * (i // 16 % 16) + 8  # BGR
        writer.write(frame)
    writer.release()
    return path


def _frame_of(image: np.ndarray) -> int:
    """The frame index encoded in an RGB frame."""
    return int(round((image[..., 2].mean() - 8) / 16)) + 16 * int(round((image[..., 1].mean() - 8) / 16))


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    return _write_video(tmp_path_factory.mktemp("video") / "clip.mp4", 80)  # 3.2 s at 25 fps


# --- decoding ---------------------------------------------------------------------------------------------------


def test_probe_reads_the_header(video):
    info = probe_video(video)
    assert (info.fps, info.frame_count, info.height, info.width) == (25.0, 80, 24, 32)
    assert info.num_seconds == 4 and info.duration == pytest.approx(3.2)


@pytest.mark.parametrize("fps, expected", [
    (1.0, [0, 25, 50, 75]),  # Cholec80's frame % 25 == 0
    (5.0, list(range(0, 80, 5))),
    (None, list(range(80))),
    (100.0, list(range(80))),  # never above the file's rate
])  # fmt: skip
def test_decodes_at_the_target_rate(video, fps, expected):
    frames = list(iter_video_frames(video, fps=fps))
    assert [f.source_index for f in frames] == expected
    assert [f.index for f in frames] == list(range(len(expected)))
    assert [f.time for f in frames] == pytest.approx([i / 25.0 for i in expected])
    # the pixels are those of the frame named
    assert [_frame_of(f.image) for f in frames] == expected
    assert frames_at_rate(80, 25.0, fps or 25.0) == len(expected)


def test_start_stop_size_and_bgr(video):
    frames = list(iter_video_frames(video, fps=1.0, start=1.0, stop=3.0, size=(12, 16)))
    assert [(f.index, f.source_index) for f in frames] == [(1, 25), (2, 50)]
    assert frames[0].image.shape == (12, 16, 3) and frames[0].image.dtype == np.uint8
    stack = read_video_frames(video, fps=1.0, size=8)
    assert stack.shape == (4, 8, 8, 3)


def test_streaming_iterator_is_lazy(video):
    frames = iter_video_frames(video, fps=1.0)
    first = next(frames)
    assert first.index == 0 and _frame_of(first.image) == 0
    frames.close()  # releases the capture


@pytest.mark.parametrize("content, problem", [
    (None, "video file not found"),
    (b"", "OpenCV cannot"),
    (b"\x00\x00\x00\x18ftypmp42" + os.urandom(2000), "OpenCV cannot"),
    (b"this is not a video at all" * 40, "OpenCV cannot"),
])  # fmt: skip
def test_undecodable_video_names_the_file(tmp_path, content, problem):
    path = tmp_path / "video07.mp4"
    if content is not None:
        path.write_bytes(content)
    for call in (lambda: probe_video(path), lambda: read_video_frames(path), lambda: list(iter_video_frames(path))):
        with pytest.raises(DataError, match=problem) as err:
            call()
        assert "video07.mp4" in str(err.value) and err.value.path.endswith("video07.mp4")


def test_truncated_video_names_the_file(tmp_path, video):
    path = tmp_path / "cut.mp4"
    path.write_bytes(video.read_bytes()[: video.stat().st_size // 2])
    with pytest.raises(DataError, match="cut.mp4"):
        read_video_frames(path)


def test_surgical_video_frames_check_the_decoded_length(video):
    record = SurgicalVideo(name="clip", source=video, num_seconds=6, labels={}, class_names={}, source_fps=25.0)
    with pytest.raises(DataError, match=r"clip.mp4: the video decodes to 4 s at 1 fps, but its annotations cover 6"):
        record.read_frames()
    short = SurgicalVideo(name="clip", source=video, num_seconds=3, labels={}, class_names={}, source_fps=25.0)
    assert [_frame_of(f) for f in short.frames()] == [0, 25, 50]  # the unlabelled last second is not yielded
    assert [_frame_of(f) for f in short.frames(start=1, stop=2)] == [25]


def test_resize_and_frame_images(tmp_path):
    image = np.arange(48 * 64 * 3, dtype=np.uint8).reshape(48, 64, 3)
    assert resize_frame(image, None) is image and resize_frame(image, (48, 64)) is image
    assert resize_frame(image, (24, 32)).shape == (24, 32, 3) and resize_frame(image, (96, 128)).shape == (96, 128, 3)
    with pytest.raises(ValueError, match="positive"):
        resize_frame(image, 0)
    png = tmp_path / "000000.png"
    cv2.imwrite(str(png), image[..., ::-1].copy())
    np.testing.assert_array_equal(read_frame_image(png), image)  # RGB back, lossless
    broken = tmp_path / "000001.png"
    broken.write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="000001.png: OpenCV cannot decode"):
        read_frame_image(broken)


# --- windows ----------------------------------------------------------------------------------------------------

WINDOW_CASES = [
    # spec kwargs, t, past seconds, future seconds (num_seconds=20)
    (dict(past=3), 5, [3, 4, 5], []),
    (dict(past=3), 0, [0, 0, 0], []),  # edge padding before second 0
    (dict(past=4, stride=3), 10, [1, 4, 7, 10], []),
    (dict(past=2, future=3, delta=2), 4, [3, 4], [6, 7, 8]),
    (dict(past=1, future=2, delta=5, future_stride=5), 10, [10], [15, 19]),  # 20 clamped to N - 1
]


@pytest.mark.parametrize("kwargs, t, past, future", WINDOW_CASES)
def test_window_indices(kwargs, t, past, future):
    spec = WindowSpec(**kwargs)
    assert spec.past_indices(t).tolist() == past
    assert spec.future_indices(t, 20).tolist() == future
    assert (spec.past_indices(t) <= t).all() and (spec.future_indices(t) > t).all()  # causal / strictly future
    many = spec.past_indices([t, t])
    assert many.shape == (2, len(past))


def test_anchors_fit_both_windows():
    spec = WindowSpec(past=5, stride=2, future=2, delta=3)
    assert spec.span == 8 + 1 + 4
    edge = spec.anchors(30)
    assert edge[0] == 0 and edge[-1] == 30 - 1 - 4
    none = WindowSpec(past=5, stride=2, future=2, delta=3, pad="none").anchors(30)
    assert none[0] == 8 and none[-1] == 25
    assert (spec.future_indices(edge) <= 29).all()
    pairs = window_samples([13, 20], spec)
    assert pairs.shape == (9 + 16, 2) and pairs[0].tolist() == [0, 0] and pairs[-1].tolist() == [1, 15]


def test_window_longer_than_the_video_names_it():
    spec = WindowSpec(past=16, future=3, delta=5)
    with pytest.raises(DataError, match=r"videos/video03.mp4: the video lasts 12 s at 1 fps, shorter than the "
                                        r"requested window"):
        spec.anchors(12, "videos/video03.mp4")
    with pytest.raises(DataError, match="VID02"):
        window_samples([40, 10], spec, sources=["VID01", "VID02"])


def test_gather_window():
    features = np.arange(10 * 2).reshape(10, 2)
    out = gather_window(features, WindowSpec(past=3).past_indices([0, 9]))
    assert out.shape == (2, 3, 2) and out[1, :, 0].tolist() == [14, 16, 18]
    with pytest.raises(IndexError):
        gather_window(features, np.array([10]))


@pytest.mark.parametrize("kwargs", [dict(past=0), dict(stride=0), dict(future=-1), dict(delta=0), dict(pad="zero")])
def test_invalid_window_spec(kwargs):
    with pytest.raises(ValueError):
        WindowSpec(**kwargs)


# --- feature cache ----------------------------------------------------------------------------------------------


@pytest.fixture
def counting():
    calls = []

    def compute(value: float = 1.0):
        def run() -> np.ndarray:
            calls.append(value)
            return np.full((5, 3), value, np.float32)

        return run

    compute.calls = calls
    return compute


def test_cache_hit_miss_and_reuse_across_instances(tmp_path, video, counting):
    root = tmp_path / "cache"
    cache = FeatureCache(root, encoder="enc-a", settings={"fps": 1, "size": (32, 32)})
    first = cache.get_or_compute(video, counting(1.0))
    again = cache.get_or_compute(video, counting(2.0))
    assert (cache.hits, cache.misses) == (1, 1) and counting.calls == [1.0]
    np.testing.assert_array_equal(first, again)
    assert video in cache and cache.path(video).parent == root and cache.path(video).name.startswith("clip.mp4-")
    # another run (a new instance, same key) reuses the file; settings compare as canonical JSON
    other = FeatureCache(root, encoder="enc-a", settings={"size": [32, 32], "fps": 1})
    other.get_or_compute(video, counting(3.0))
    assert other.hits == 1 and counting.calls == [1.0]
    assert sorted(p.name for p in root.iterdir()) == [cache.path(video).name]  # no temporary left behind
    mm = FeatureCache(root, encoder="enc-a", settings={"fps": 1, "size": (32, 32)}, mmap=True).load(video)
    assert isinstance(mm, np.memmap) and mm.shape == (5, 3)


def test_cache_invalidation(tmp_path, video, counting):
    local = tmp_path / "video01.mp4"
    local.write_bytes(video.read_bytes())
    settings = {"fps": 1, "size": 32}
    cache = FeatureCache(tmp_path / "cache", encoder="enc-a", settings=settings)
    cache.get_or_compute(local, counting(1.0))
    key = cache.key(local)

    st = local.stat()
    os.utime(local, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))  # touched: a new key
    assert cache.key(local) != key
    cache.get_or_compute(local, counting(2.0))
    assert cache.misses == 2

    for changed in (FeatureCache(tmp_path / "cache", encoder="enc-b", settings=settings),
                    FeatureCache(tmp_path / "cache", encoder="enc-a", settings={"fps": 1, "size": 64})):
        changed.get_or_compute(local, counting(3.0))
        assert changed.misses == 1
    # the video's content changes size: a new key too
    with local.open("ab") as f:
        f.write(b"\0")
    assert cache.key(local) not in {key}
    assert len(counting.calls) == 4


def test_weights_digest_tracks_the_weights(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    digest = weights_digest(net)
    assert digest == weights_digest(net.state_dict()) == weights_digest({k: v.clone() for k, v in
                                                                         net.state_dict().items()})
    with torch.no_grad():
        net[0].weight[0, 0, 0, 0] += 1e-3
    assert weights_digest(net) != digest
    half = {"w": torch.zeros(2, dtype=torch.bfloat16)}
    assert weights_digest(half) != weights_digest({"w": torch.zeros(2, dtype=torch.float16)})
    ckpt = tmp_path / "encoder.pt"
    torch.save(net.state_dict(), ckpt)
    assert weights_digest(ckpt).startswith("sha256:") and weights_digest(str(ckpt)) == weights_digest(ckpt)
    assert weights_digest("sha256:given") == "sha256:given"
    cache = FeatureCache(tmp_path / "c", encoder=net)
    assert cache.encoder == weights_digest(net)


@pytest.mark.parametrize("damage", [b"", b"not an npy file", b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order"])
def test_corrupt_entry_is_recomputed_with_a_warning(tmp_path, video, counting, caplog, damage):
    cache = FeatureCache(tmp_path / "cache", encoder="enc", settings={})
    cache.get_or_compute(video, counting(1.0))
    cache.path(video).write_bytes(damage)
    with caplog.at_level(logging.WARNING, logger="medkd.data.surgical.feature_cache"):
        out = cache.get_or_compute(video, counting(2.0))
    assert "corrupt" in caplog.text and cache.path(video).name in caplog.text
    assert float(out[0, 0]) == 2.0 and cache.misses == 2
    assert float(np.load(cache.path(video))[0, 0]) == 2.0  # rewritten


def test_truncated_entry_is_recomputed(tmp_path, video, counting, caplog):
    cache = FeatureCache(tmp_path / "cache", encoder="enc", settings={})
    cache.save(video, np.ones((100, 8), np.float32))
    path = cache.path(video)
    path.write_bytes(path.read_bytes()[:-50])
    with caplog.at_level(logging.WARNING):
        assert cache.load(video) is None
    assert "corrupt" in caplog.text and not path.exists()


def test_cache_keys_frame_folders_and_rejects_bad_input(tmp_path):
    folder = tmp_path / "VID01"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i:06d}.png").write_bytes(b"x" * (i + 1))
    ident = file_identity(folder)
    assert ident["files"] == 3 and ident["size"] == 6
    key = cache_key(folder, "enc", {})
    (folder / "000003.png").write_bytes(b"y")
    assert cache_key(folder, "enc", {}) != key
    with pytest.raises(DataError, match="missing.mp4"):
        FeatureCache(tmp_path / "c", encoder="e").get_or_compute(tmp_path / "missing.mp4", lambda: np.zeros(2))
    with pytest.raises(ValueError, match="JSON-like"):
        FeatureCache(tmp_path / "c", encoder="e", settings={"transform": object()})
    with pytest.raises(ValueError, match="numeric"):
        FeatureCache(tmp_path / "c", encoder="e").save(folder, np.array("text"))
    cache = FeatureCache(tmp_path / "c", encoder="e")
    cache.save(folder, np.zeros(3))
    assert cache.clear() == 1 and folder not in cache and tmp_path / "missing.mp4" not in cache
