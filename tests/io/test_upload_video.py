# SPDX-License-Identifier: Apache-2.0
"""App uploads hold a 2D image, a volume or a video: videos (MP4/AVI) are sniffed by content, decoded with OpenCV
into RGB frames at a chosen rate within the frame budget, and every decoded upload says what kind of input it is."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

cv2 = pytest.importorskip("cv2")
Image = pytest.importorskip("PIL.Image")

from medkd.errors import DataError
from medkd.io.upload import INPUT_KINDS, LoadedImage, LoadedVideo, load_upload, sniff, upload_limits

#: container, fourcc: the two codecs OpenCV writes everywhere
CODECS = [("mp4", "mp4v"), ("avi", "MJPG")]
H, W = 48, 64


@pytest.fixture(autouse=True)
def _private_tempdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Nothing may be written to the system temp folder (only under workdir)."""
    systmp = tmp_path / "systmp"
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    yield systmp
    assert not any(systmp.iterdir())


def _video(path: Path, fourcc: str, n_frames: int = 12, fps: float = 10.0) -> bytes:
    """A synthetic clip: a red bar (RGB 255, 0, 0) 8 pixels wide at x = 4 * frame index on black."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.zeros((H, W, 3), np.uint8)
        frame[:, 4 * i : 4 * i + 8] = (0, 0, 255)  # BGR red
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def _bar_x(frame: np.ndarray) -> int:
    """Left edge of the red bar in an RGB frame (codec-tolerant)."""
    red = (frame[..., 0].astype(int) > 150) & (frame[..., 1] < 100) & (frame[..., 2] < 100)
    return int(np.flatnonzero(red.mean(axis=0) > 0.5)[0])


@pytest.mark.parametrize(("ext", "fourcc"), CODECS)
def test_video_is_sniffed_by_content_and_decoded_to_rgb_frames(ext, fourcc, tmp_path):
    data = _video(tmp_path / f"clip.{ext}", fourcc)
    (tmp_path / "noext").write_bytes(data)
    assert sniff(tmp_path / "noext") == ("video", "")
    loaded = load_upload([("clip_from_theatre", data)], tmp_path / "work")  # no extension: sniffed, not guessed
    assert isinstance(loaded, LoadedVideo) and loaded.input_kind == "video" and loaded.kind == "video"
    assert loaded.frames.shape == (12, H, W, 3) and loaded.frames.dtype == np.uint8
    assert loaded.fps == pytest.approx(10.0) and loaded.source_fps == pytest.approx(10.0)
    assert [_bar_x(f) for f in loaded.frames] == pytest.approx([4 * i for i in range(12)], abs=2)  # RGB, in order
    info = loaded.info()
    assert info["frames"] == "12" and info["input"] == "video" and "10 fps" in info["frame rate"]
    assert loaded.folder is not None and loaded.folder.parent == tmp_path / "work"


@pytest.mark.parametrize("fps", [5.0, 2.5])
def test_video_decoded_at_a_chosen_rate_drops_frames_evenly(fps, tmp_path):
    data = _video(tmp_path / "clip.avi", "MJPG", n_frames=12, fps=10.0)
    loaded = load_upload([("clip.avi", data)], tmp_path / "work", fps=fps)
    step = round(10.0 / fps)
    assert loaded.fps == pytest.approx(fps) and len(loaded.frames) == len(range(0, 12, step))
    assert [_bar_x(f) for f in loaded.frames] == pytest.approx([4 * i for i in range(0, 12, step)], abs=2)
    faster = load_upload([("clip.avi", data)], tmp_path / "work", fps=50.0)  # never above the file's rate
    assert faster.fps == pytest.approx(10.0) and len(faster.frames) == 12
    with pytest.raises(DataError, match="frame rate"):
        load_upload([("clip.avi", data)], tmp_path / "work", fps=0.0)


def test_video_frame_budget_keeps_the_first_frames_and_says_so(tmp_path, monkeypatch):
    data = _video(tmp_path / "clip.mp4", "mp4v", n_frames=12)
    loaded = load_upload([("clip.mp4", data)], tmp_path / "work", limits=upload_limits(max_video_frames=4))
    assert len(loaded.frames) == 4 and [_bar_x(f) for f in loaded.frames] == pytest.approx([0, 4, 8, 12], abs=2)
    assert "only the first 4 frames" in loaded.note and "$MEDKD_UPLOAD_MAX_VIDEO_FRAMES" in loaded.note
    monkeypatch.setenv("MEDKD_UPLOAD_MAX_VIDEO_FRAMES", "3")
    assert len(load_upload([("clip.mp4", data)], tmp_path / "work").frames) == 3
    monkeypatch.delenv("MEDKD_UPLOAD_MAX_VIDEO_FRAMES")
    whole = load_upload([("clip.mp4", data)], tmp_path / "work")
    assert len(whole.frames) == 12 and whole.note == ""


def test_video_frames_beyond_the_pixel_budget_are_refused_before_decoding(tmp_path):
    data = _video(tmp_path / "clip.mp4", "mp4v")
    with pytest.raises(DataError) as info:
        load_upload([("big.mp4", data)], tmp_path / "work", limits=upload_limits(max_voxels=H * W - 1))
    assert info.value.path == "big.mp4" and "pixels" in info.value.problem
    assert "MEDKD_UPLOAD_MAX_VOXELS" in info.value.problem


def test_damaged_or_several_videos_are_clear_errors_without_server_paths(tmp_path):
    data = _video(tmp_path / "clip.mp4", "mp4v")
    damaged = data[:40] + bytes(200)  # the ftyp box, then nothing usable
    with pytest.raises(DataError) as info:
        load_upload([("theatre.mp4", damaged)], tmp_path / "work")
    assert info.value.path == "theatre.mp4" and "video" in info.value.problem
    assert str(tmp_path) not in str(info.value)
    with pytest.raises(DataError, match="2 video files were uploaded"):
        load_upload([("a.mp4", data), ("b.mp4", data)], tmp_path / "work")
    with pytest.raises(DataError, match="mixes"):
        png = tmp_path / "x.png"
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(png)
        load_upload([("a.mp4", data), ("x.png", png.read_bytes())], tmp_path / "work")
    assert not list((tmp_path / "work").iterdir())  # failed uploads leave nothing behind


def test_images_and_volumes_say_which_input_kind_they_are(tmp_path):
    import SimpleITK as sitk

    png = tmp_path / "x.png"
    Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8) * 3).save(png)
    picture = load_upload([("x.png", png.read_bytes())], tmp_path / "work")
    assert isinstance(picture, LoadedImage) and picture.input_kind == "image2d" and picture.info()["input"] == "image2d"
    nii = tmp_path / "v.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((5, 8, 8), np.float32)), str(nii))
    volume = load_upload([("v.nii.gz", nii.read_bytes())], tmp_path / "work")
    assert volume.input_kind == "volume" and set(INPUT_KINDS) == {"image2d", "volume", "video"}
