# SPDX-License-Identifier: Apache-2.0
"""Surgical video data (spec ``surgfutr.md`` §5): OpenCV decoding at 1 fps, the Cholec80 and CholecT50 readers,
causal and future clip windows, and an on-disk feature cache keyed by video, encoder weights and settings.

Example:
    >>> spec = WindowSpec(past=3, future=1, delta=2)
    >>> spec.past_indices(1).tolist(), spec.future_indices(1).tolist()
    ([0, 0, 1], [3])
"""

from __future__ import annotations

from medkd.data.surgical.cholec80 import (
    CHOLEC80_FPS,
    CHOLEC80_PHASES,
    CHOLEC80_TOOLS,
    cholec80_files,
    cholec80_name,
    list_cholec80_videos,
    read_cholec80,
    read_cholec80_video,
    read_phase_annotation,
    read_tool_annotation,
    write_phase_annotation,
    write_tool_annotation,
)
from medkd.data.surgical.cholect50 import (
    CHOLECT50_CATEGORIES,
    CHOLECT50_VECTOR_FIELDS,
    CholecT50Labels,
    cholect50_files,
    cholect50_name,
    list_cholect50_videos,
    read_cholect50,
    read_cholect50_labels,
    read_cholect50_video,
    write_cholect50_labels,
)
from medkd.data.surgical.feature_cache import CACHE_VERSION, FeatureCache, cache_key, file_identity, weights_digest
from medkd.data.surgical.video import (
    SurgicalKeys,
    SurgicalVideo,
    VideoFrame,
    VideoInfo,
    frames_at_rate,
    iter_video_frames,
    probe_video,
    read_frame_image,
    read_video_frames,
    resize_frame,
)
from medkd.data.surgical.windows import PadMode, WindowSpec, gather_window, window_samples

__all__ = [
    "CHOLEC80_FPS",
    "CHOLEC80_PHASES",
    "CHOLEC80_TOOLS",
    "cholec80_files",
    "cholec80_name",
    "list_cholec80_videos",
    "read_cholec80",
    "read_cholec80_video",
    "read_phase_annotation",
    "read_tool_annotation",
    "write_phase_annotation",
    "write_tool_annotation",
    "CHOLECT50_CATEGORIES",
    "CHOLECT50_VECTOR_FIELDS",
    "CholecT50Labels",
    "cholect50_files",
    "cholect50_name",
    "list_cholect50_videos",
    "read_cholect50",
    "read_cholect50_labels",
    "read_cholect50_video",
    "write_cholect50_labels",
    "CACHE_VERSION",
    "FeatureCache",
    "cache_key",
    "file_identity",
    "weights_digest",
    "SurgicalKeys",
    "SurgicalVideo",
    "VideoFrame",
    "VideoInfo",
    "frames_at_rate",
    "iter_video_frames",
    "probe_video",
    "read_frame_image",
    "read_video_frames",
    "resize_frame",
    "PadMode",
    "WindowSpec",
    "gather_window",
    "window_samples",
]
