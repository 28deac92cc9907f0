# SPDX-License-Identifier: Apache-2.0
"""SurgFUTR's :class:`~medkd.methods.bundle_spec.BundleSpec` (kind ``forecasting``) and the components its bundles
name: what ``medkd bundle export`` writes for a SurgFUTR run.

- ``network_def``: :func:`surgfutr_forecaster` (``_target_``, from plain keywords: the student's ``model`` config,
  head ``layout`` and ``variant``) builds a :class:`SurgFUTRForecaster`, the run's student behind a one-tensor
  interface; ``models/model.pt`` holds its weights (the student of ``RUN/train/best.pt``, else ``last.pt``). The
  factory is named by its import path rather than through ``medkd.nets.create_net``: it lives in the method's
  package, which a fresh ``python -m monai.bundle`` process would not have imported to register a name, and no
  :class:`~medkd.nets.NetTask` contract fits a forecaster. medkd's trust check allowlists this module
  (``component_modules``).
- ``network_data_format``: ``image`` a ``series`` ``(3, S, H, W)``, the ``S = cfg.past_seconds`` 1-fps RGB frames
  of one causal window (oldest first, values in [0, 1] or uint8, ``H, W = data.frame_size``); ``pred`` the forecast
  vector ``(B, C)`` at the window's last second (:func:`vector_channels`: remaining minutes, change probability,
  phase probabilities, minutes to the next phase and to each phase per horizon, presence and event
  probabilities). The elapsed time is an optional second argument (minutes, ``(B,)``); without it the window is
  taken to start the video. ``verify_net_in_out`` feeds a random window and checks ``C`` and the dtype.
- the workflow: :class:`LoadSurgicalVideod` (a video file decoded at 1 fps and resized) ->
  :class:`SurgFUTRForecastInferer` (every second of the video, each frame encoded once:
  :func:`~medkd.methods.surgfutr.forecast.forecast_frames`, as ``medkd surgfutr predict``) ->
  :class:`SaveForecastsCSVd`, so ``python -m monai.bundle run`` writes ``<video>_forecasts.csv`` with the rows and
  columns of ``medkd surgfutr predict`` (:func:`~medkd.methods.surgfutr.predict.forecast_row`).
- the bundle's predictor (:func:`bundle_predictor`) is the run predictor's twin: same forecasts, labels, metadata.

Sharma et al., "SurgFUTR: surgical future state prediction", arXiv 2510.12904.

Example:
    >>> from medkd.methods.bundle_spec import get_bundle_spec
    >>> spec = get_bundle_spec("surgfutr", "runs/x")
    >>> spec.kind, spec.stages, spec.component_modules
    ('forecasting', ('train',), ('medkd.methods.surgfutr.bundle',))
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.inferers import Inferer
from monai.transforms import MapTransform
from torch import nn

from medkd.methods.bundle_spec import (
    BundleSpec,
    DatasetCard,
    ExportModel,
    ModelCardText,
    image_tensor,
    network_data_format,
    register_bundle_spec,
)

__all__ = [
    "DATASET_CARDS", "FACTORY", "INFERER", "LOADER", "SURGFUTR_BUNDLE_SPEC", "SURGFUTR_REFERENCE", "WRITER",
    "LoadSurgicalVideod", "SaveForecastsCSVd", "SurgFUTRForecastInferer", "SurgFUTRForecaster", "bundle_predictor",
    "forecasts_from_vector", "surgfutr_forecaster", "vector_channels", "vector_from_forecasts",
]

SURGFUTR_REFERENCE = (
    "Sharma et al. (with Nwoye, Mutter, Padoy). SurgFUTR: surgical future state prediction. arXiv 2510.12904, "
    "2025. https://arxiv.org/abs/2510.12904"
)
_MODULE = "medkd.methods.surgfutr.bundle"
FACTORY = f"{_MODULE}.surgfutr_forecaster"
LOADER = f"{_MODULE}.LoadSurgicalVideod"
INFERER = f"{_MODULE}.SurgFUTRForecastInferer"
WRITER = f"{_MODULE}.SaveForecastsCSVd"
#: files of ``dataset_dir`` that ``monai.bundle run`` reads (frame folders go through ``medkd surgfutr predict``)
INPUT_PATTERNS: tuple[str, ...] = ("*.mp4", "*.avi", "*.mov", "*.mkv", "*.m4v")

_CAMMA_TERMS = (
    "Cholec80 and CholecT50 are released by the CAMMA research group (ICube, University of Strasbourg / IHU "
    "Strasbourg) under the Creative Commons Attribution-NonCommercial-ShareAlike 4.0 licence (CC BY-NC-SA 4.0): "
    "research and educational use only, no commercial use, attribution required, derivatives under the same "
    "licence. If these weights were trained on {name}, they are a derivative of it: use them under these terms "
    "only, and publications must cite:\n"
)
_CHOLEC80_REF = ("Twinanda A. P., Shehata S., Mutter D., Marescaux J., de Mathelin M., Padoy N. EndoNet: A Deep "
                 "Architecture for Recognition Tasks on Laparoscopic Videos. IEEE Transactions on Medical Imaging "
                 "36(1), 86-97 (2017).")
_CHOLECT50_REF = ("Nwoye C. I., Yu T., Gonzalez C., Seeliger B., Mascagni P., Mutter D., Marescaux J., Padoy N. "
                  "Rendezvous: Attention mechanisms for the recognition of surgical action triplets in endoscopic "
                  "videos. Medical Image Analysis 78, 102433 (2022).")

#: dataset folder or layout (``data.dataset``, else ``data.layout``; case-insensitive) -> its card
DATASET_CARDS: dict[str, DatasetCard] = {
    "cholec80": DatasetCard(
        title="Cholec80 laparoscopic cholecystectomy videos (or medkd's synthetic videos in its layout)",
        modality="ES", source="Cholec80 (CAMMA, http://camma.u-strasbg.fr/datasets), layout videos/videoNN.mp4 with "
        "phase and tool annotations", data_type="MP4 videos at 25 fps, analysed at 1 fps (training and bundle "
        "inference)", terms=_CAMMA_TERMS.format(name="Cholec80") + _CHOLEC80_REF, reference=_CHOLEC80_REF,
    ),
    "cholect50": DatasetCard(
        title="CholecT50 action-triplet videos (or medkd's synthetic videos in its layout)", modality="ES",
        source="CholecT50 (CAMMA, https://github.com/CAMMA-public/cholect50), layout videos/VIDnn/000000.png with "
        "triplet JSON labels", data_type="1-fps PNG frame folders (training); MP4/AVI videos decoded at 1 fps "
        "(bundle inference)", terms=_CAMMA_TERMS.format(name="CholecT50") + _CHOLECT50_REF,
        reference=_CHOLECT50_REF,
    ),
    "synthetic": DatasetCard(
        title="medkd's synthetic laparoscopic videos", modality="n/a",
        source="medkd.data.synthetic.surgical_video.write_synthetic_surgical (synthetic, no patient data)",
        data_type="MP4 videos or 1-fps PNG folders (training); MP4/AVI videos decoded at 1 fps (bundle inference)",
    ),
}


# ---- the network ----------------------------------------------------------------------------------------------------
def vector_channels(layout: Any, classes: Mapping[str, Any] | None = None) -> list[str]:
    """Names of the forecast vector's channels (``pred``), in order, for a head ``layout`` (``classes``: the names).

    Example:
        >>> from medkd.methods.surgfutr.modules import HeadLayout
        >>> vector_channels(HeadLayout(2, 1, 0, (1,), (), (2.0,)), {"phase_names": ["a", "b"], "presence_names": ["x"]})
        ['rsd_min', 'change', 'phase_prob:a', 'phase_prob:b', 'phase_next_min@2min', 'phase_tta_min@2min:a', \
'phase_tta_min@2min:b', 'presence@1s:x']
    """
    classes = classes or {}

    def names(key: str, n: int) -> list[str]:
        found = list(classes.get(key) or ())
        return found if len(found) == n else [str(i) for i in range(n)]

    phases, presence = names("phase_names", layout.phases), names("presence_names", layout.presence)
    events = names("event_names", layout.events)
    out = ["rsd_min", "change"]
    if layout.phases:
        out += [f"phase_prob:{p}" for p in phases]
        out += [f"phase_next_min@{h:g}min" for h in layout.transition_horizons_min]
        out += [f"phase_tta_min@{h:g}min:{p}" for h in layout.transition_horizons_min for p in phases]
    if layout.presence:
        out += [f"presence@{d:g}s:{c}" for d in layout.presence_deltas_s for c in presence]
    if layout.events:
        out += [f"events@{h:g}s:{e}" for h in layout.event_horizons_s for e in events]
    return out


def _vector(out: Mapping[str, torch.Tensor], layout: Any) -> torch.Tensor:
    """The student's outputs -> ``(B, C)`` in the order of :func:`vector_channels` (as ``to_forecasts`` maps them)."""
    b = out["rsd"].shape[0]
    parts = [out["rsd"].float()[:, None], torch.sigmoid(out["change"].float())[:, None]]
    if layout.phases:
        parts += [torch.softmax(out["phase_now"].float(), dim=-1), out["phase_next"].float(),
                  out["phase_tta"].float().reshape(b, -1)]
    if layout.presence:
        parts.append(torch.sigmoid(out["presence"].float()).reshape(b, -1))
    if layout.events:
        parts.append(torch.sigmoid(out["events"].float()).reshape(b, -1))
    return torch.cat(parts, dim=1)


def vector_from_forecasts(fc: Mapping[str, np.ndarray], layout: Any) -> np.ndarray:
    """:func:`~medkd.methods.surgfutr.forecast.forecast_frames`'s dict -> float32 ``(N, C)`` forecast vectors."""
    parts = [np.asarray(fc["rsd"])[:, None], np.asarray(fc["change"])[:, None]]
    if layout.phases:
        parts.append(fc["phase_prob"])
        parts += [np.asarray(fc[f"phase_next@{h:g}min"])[:, None] for h in layout.transition_horizons_min]
        parts += [fc[f"phase_tta@{h:g}min"] for h in layout.transition_horizons_min]
    if layout.presence:
        parts += [fc[f"presence@{d:g}s"] for d in layout.presence_deltas_s]
    if layout.events:
        parts += [fc[f"events@{h:g}s"] for h in layout.event_horizons_s]
    return np.concatenate([np.asarray(p, np.float32) for p in parts], axis=1)


def forecasts_from_vector(vector: Any, layout: Any, *, start_second: int = 0) -> dict[str, np.ndarray]:
    """Forecast vectors ``(N, C)`` of consecutive seconds -> the named forecasts of
    :func:`~medkd.methods.surgfutr.forecast.forecast_frames` (``elapsed`` from ``start_second``)."""
    v = np.asarray(vector.detach().cpu() if isinstance(vector, torch.Tensor) else vector, np.float32)
    v = v.reshape(v.shape[0], -1)
    n, p, hs = v.shape[0], layout.phases, layout.transition_horizons_min
    fc = {"elapsed": (np.arange(n, dtype=np.float32) + start_second) / 60.0, "rsd": v[:, 0], "change": v[:, 1]}
    i = 2
    if p:
        fc["phase_prob"] = v[:, i:i + p]
        fc["phase"] = fc["phase_prob"].argmax(-1)
        i += p
        for h in hs:
            fc[f"phase_next@{h:g}min"] = v[:, i]
            i += 1
        for h in hs:
            fc[f"phase_tta@{h:g}min"] = v[:, i:i + p]
            i += p
    for d in layout.presence_deltas_s if layout.presence else ():
        fc[f"presence@{d:g}s"] = v[:, i:i + layout.presence]
        i += layout.presence
    for h in layout.event_horizons_s if layout.events else ():
        fc[f"events@{h:g}s"] = v[:, i:i + layout.events]
        i += layout.events
    if i != v.shape[1]:
        raise ValueError(f"a forecast vector of {v.shape[1]} channels does not fit the head layout ({i} channels)")
    return fc


class SurgFUTRForecaster(nn.Module):
    """The deployed SurgFUTR student behind a one-tensor interface: one causal window of 1-fps frames ``(B, 3, S,
    H, W)`` (channels first, oldest frame first, uint8 or float in [0, 1]) -> forecast vector ``(B, C)`` at the
    window's last second (channels: :func:`vector_channels`).

    ``S = (L - 1) * s + T`` (``cfg.past_seconds``): the L clips of T frames, stride s, end at seconds
    ``T - 1, T - 1 + s, ..., S - 1`` of the window, as :func:`~medkd.methods.surgfutr.forecast.forecast_frames`
    builds them. Sharma et al., arXiv 2510.12904.

    Args:
        student: a :class:`~medkd.methods.surgfutr.model.Student`.

    Example:
        >>> net = surgfutr_forecaster(model={"feature_dim": 32, "state_dim": 16, "width": 8, "window": 2,
        ...                                  "clip_stride": 2, "clip_frames": 2},
        ...                           layout={"phases": 3, "presence": 2, "events": 0, "presence_deltas_s": [1],
        ...                                   "event_horizons_s": [], "transition_horizons_min": [2.0]}).eval()
        >>> tuple(net(torch.rand(1, 3, net.past_seconds, 32, 32)).shape)
        (1, 11)
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.layout = student.layout
        window, frames, stride = student.window, student.clip_frames, student.clip_stride
        self.past_seconds = (window - 1) * stride + frames
        ends = (frames - 1) + stride * torch.arange(window)
        self.register_buffer("frame_index", ends[:, None] - (frames - 1) + torch.arange(frames), persistent=False)

    @property
    def num_channels(self) -> int:
        """``C``, the forecast vector's length."""
        return len(vector_channels(self.layout))

    def forward(self, frames: torch.Tensor, elapsed_min: torch.Tensor | None = None) -> torch.Tensor:
        """A window ``(B, 3, S, H, W)`` and the elapsed minutes at its last frame ``(B,)`` (default ``(S - 1) / 60``:
        the window starts the video) -> ``(B, C)`` float32.

        Raises:
            ValueError: a window that is not ``(B, 3, S, H, W)``.
        """
        if frames.ndim != 5 or frames.shape[1] != 3 or frames.shape[2] != self.past_seconds:
            raise ValueError(f"expected a window (B, 3, {self.past_seconds}, H, W), got {tuple(frames.shape)}")
        feats = self.student.frame_features(frames.movedim(1, 2))  # (B, S, D)
        clips = self.student.clip_features(feats[:, self.frame_index])  # (B, L, T, D) -> (B, L, D)
        if elapsed_min is None:
            elapsed_min = torch.full((frames.shape[0],), (self.past_seconds - 1) / 60.0, device=frames.device)
        out = self.student.forward_window(clips, torch.as_tensor(elapsed_min, device=frames.device).float())
        return _vector(out, self.layout)


def _head_layout(layout: Mapping[str, Any]) -> Any:
    from medkd.methods.surgfutr.modules import HeadLayout

    return HeadLayout.from_dict(layout)


def surgfutr_forecaster(*, model: Mapping[str, Any], layout: Mapping[str, Any],
                        variant: str = "surgfutr") -> SurgFUTRForecaster:
    """A :class:`SurgFUTRForecaster` from plain keywords (a bundle's ``network_def``).

    Args:
        model: ``ModelConfig`` fields (the run's ``config.yaml`` ``model`` section; missing ones take defaults).
        layout: the head layout (``RUN/classes.json`` ``layout``: ``phases``, ``presence``, ``events`` and the
            three horizon lists).
        variant: ``surgfutr``, ``no_teacher`` or ``feature_regression``.

    Raises:
        ConfigError: an unknown or invalid model field or variant.
    """
    from medkd.config import config_from_dict
    from medkd.methods.surgfutr.config import SurgFUTRConfig
    from medkd.methods.surgfutr.model import Student

    cfg = config_from_dict(SurgFUTRConfig, {"variant": variant, "model": dict(model)}, source="network_def")
    return SurgFUTRForecaster(Student(cfg, _head_layout(layout)))


# ---- workflow components --------------------------------------------------------------------------------------------
class LoadSurgicalVideod(MapTransform):
    """Replace each key's video path with its frames at 1 fps, resized: a uint8 :class:`~monai.data.MetaTensor`
    ``(N, H, W, 3)`` RGB whose meta ``filename_or_obj`` is the file (a folder of 1-fps frame images works too).

    Args:
        keys: keys holding the paths. size: ``(height, width)``, the run's ``data.frame_size``.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: KeysCollection, size: Sequence[int], allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.size = (int(size[0]), int(size[1]))

    def __call__(self, data: Mapping[str, Any]) -> dict[str, Any]:
        from medkd.methods.surgfutr.predict import read_video_input

        d = dict(data)
        for key in self.key_iterator(d):
            frames = read_video_input(d[key], self.size)
            d[key] = MetaTensor(torch.from_numpy(frames), meta={"filename_or_obj": str(d[key]), "fps": 1.0})
        return d


class SurgFUTRForecastInferer(Inferer):
    """Forecast every second of each video of a batch, as the run's predictor does.

    Args:
        frame_size: ``(height, width)`` frames are resized to (the run's ``data.frame_size``).
        chunk: frames or windows per forward.
    """

    def __init__(self, frame_size: Sequence[int], chunk: int = 256) -> None:
        super().__init__()
        self.frame_size, self.chunk = (int(frame_size[0]), int(frame_size[1])), int(chunk)

    def forecast(self, network: SurgFUTRForecaster, frames: Any) -> dict[str, np.ndarray]:
        """The ``forecasting`` kind's output for 1-fps frames (an array ``(T, H, W[, 3])`` or an iterable)."""
        from medkd.methods.surgfutr.forecast import forecast_frames
        from medkd.methods.surgfutr.predict import to_frames

        return forecast_frames(network.student, to_frames(frames, self.frame_size), chunk=self.chunk)

    def __call__(self, inputs: Any, network: nn.Module, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Videos ``(B, N, H, W, 3)`` uint8 (:class:`LoadSurgicalVideod`) -> forecast vectors ``(B, N, C)`` float32
        (a tensor, so the evaluator's ``decollate_batch`` splits it by video; :func:`forecasts_from_vector` names
        them)."""
        vectors = []
        for item in inputs:
            plain = item.as_tensor() if isinstance(item, MetaTensor) else torch.as_tensor(item)
            fc = self.forecast(network, plain.detach().cpu().numpy())
            vectors.append(torch.from_numpy(vector_from_forecasts(fc, network.layout)))
        return torch.stack(vectors)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(frame_size={list(self.frame_size)}, chunk={self.chunk})"


class SaveForecastsCSVd:
    """Write each item's ``pred`` (forecast vectors ``(N, C)``) as ``<output_dir>/<video stem>_forecasts.csv``, the
    CSV of ``medkd surgfutr predict`` (:func:`~medkd.methods.surgfutr.predict.forecast_csv`). The last
    ``postprocessing`` transform of a SurgFUTR bundle (MONAI Deploy strips it).

    Args:
        output_dir: folder for the files (created).
        classes: ``phase_names``, ``presence_names``, ``event_names``.
        layout: the head layout (``RUN/classes.json`` ``layout``).
        pred_key, image_key: the item's keys.
    """

    def __init__(self, output_dir: str, classes: Mapping[str, Any], layout: Mapping[str, Any],
                 pred_key: str = "pred", image_key: str = "image") -> None:
        self.output_dir, self.classes, self.layout = Path(output_dir), dict(classes), dict(layout)
        self.pred_key, self.image_key = pred_key, image_key
        self._count = 0

    def __call__(self, data: Mapping[str, Any]) -> Mapping[str, Any]:
        from medkd.io.atomic import write_text_atomic
        from medkd.methods.surgfutr.predict import forecast_csv

        fc = forecasts_from_vector(data[self.pred_key], _head_layout(self.layout))
        image = data.get(self.image_key)
        name = image.meta.get("filename_or_obj") if isinstance(image, MetaTensor) else None
        stem = Path(str(name)).stem if name else f"video_{self._count}"
        self._count += 1
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.output_dir / f"{stem}_forecasts.csv", forecast_csv(fc, self.classes, self.layout))
        return data

    def __repr__(self) -> str:
        return f"{type(self).__name__}(output_dir={str(self.output_dir)!r})"


# ---- the spec -------------------------------------------------------------------------------------------------------
_TRAINING_KEYS = ("variant", "data", "model", "tasks", "loss", "train", "seed")
_HOW_TO_RUN = """With medkd (a video file or a folder of 1-fps frames in; one CSV row per analysed second out):

```bash
medkd bundle info {bundle_path}
medkd bundle verify {bundle_path}
medkd app   # choose the bundle, upload an MP4/AVI: timeline, forecasts and the CSV
```

In Python:

```python
from medkd.inference import load_predictor

predictor = load_predictor("{bundle_path}", device="auto")
forecasts = predictor(frames)  # uint8 (T, H, W, 3) RGB at 1 fps -> {"rsd": (T,), "phase": (T,), ...}
```"""


def _classes(model: ExportModel) -> Any:
    from medkd.methods.surgfutr.runs import read_classes

    return read_classes(model.run)


def _layout(classes: Any) -> dict[str, Any]:
    from medkd.methods.surgfutr.predict import _layout_dict

    return _layout_dict(classes.layout)


def _names(classes: Any) -> dict[str, list[str]]:
    return {k: [str(n) for n in classes.get(k) or ()] for k in ("phase_names", "presence_names", "event_names")}


def _load(run: Path, checkpoint: str, stage: str | None) -> ExportModel:
    """The run's student (``best``, else ``last``) as a :class:`SurgFUTRForecaster` built from ``network_def``."""
    from medkd.config import config_to_dict
    from medkd.engine.checkpoint import load_checkpoint
    from medkd.methods.surgfutr.runs import load_student

    student, cfg, classes, path = load_student(run, "cpu", checkpoint)
    network = surgfutr_forecaster(**_kwargs(cfg, classes))
    network.student.load_state_dict(student.state_dict())
    ckpt = load_checkpoint(path)
    best = ckpt.get("best_score")
    return ExportModel(
        run=Path(run), config=cfg, config_dict=config_to_dict(cfg), net="surgfutr_forecaster",
        network=network.eval(), state=network.state_dict(), checkpoint_file=path, stage="train",
        iteration=int(ckpt.get("iteration", 0)),
        best_score=float(best) if isinstance(best, (int, float)) and math.isfinite(best) else None,
    )


def _kwargs(cfg: Any, classes: Any) -> dict[str, Any]:
    from medkd.config import config_to_dict
    from medkd.methods.surgfutr.model import encoder_kwargs

    model = config_to_dict(cfg)["model"]
    if cfg.model.encoder != "cnn":  # the bundle has no data section: keep the encoder's frame size in its keywords
        model["encoder_params"] = {k: v for k, v in encoder_kwargs(cfg).items() if k not in ("in_channels",
                                                                                              "feature_dim")}
    model["encoder_weights"] = ""  # models/model.pt holds the trained encoder; the SALT file is not shipped
    return {"model": model, "layout": _layout(classes), "variant": cfg.variant.value}


def _dataset_card(model: ExportModel) -> DatasetCard:
    data = model.config.data
    return DATASET_CARDS.get(str(data.dataset).lower(), DATASET_CARDS[data.layout.value])


def _describe(model: ExportModel, names: Sequence[str], card: DatasetCard) -> tuple[str, str]:
    cfg = model.config
    task = "surgical future-state forecasting from endoscopic video (phase, time to the next phase, remaining " \
           "duration, upcoming tools and events)"
    description = (f"SurgFUTR ({cfg.variant.value}) student forecasting, every second of a laparoscopic video, the "
                   f"current phase, the next phase's onset, the remaining duration, tool presence and events, "
                   f"trained on {card.title}; exported by medkd from run {model.run.resolve().name!r}.")
    return task, description


def _network_def(model: ExportModel) -> dict[str, Any]:
    return {"_target_": FACTORY, **_kwargs(model.config, _classes(model))}


def _network_data_format(model: ExportModel, names: Sequence[str], card: DatasetCard, divisor: int | None
                         ) -> dict[str, Any]:
    """``image`` one window ``(3, S, H, W)``; ``pred`` the forecast vector ``(B, C)`` (module docstring)."""
    cfg, classes = model.config, _classes(model)
    height, width = (int(s) for s in cfg.data.frame_size)
    image = image_tensor(spatial_shape=[cfg.past_seconds, height, width], modality=card.modality, num_channels=3,
                         value_range=[0, 1], channel_def={"0": "R", "1": "G", "2": "B"}, type="series",
                         format="RGB", is_patch_data=True)
    channels = vector_channels(classes.layout, classes)
    pred = {"type": "probabilities", "format": "surgfutr forecast vector (B, C): minutes and probabilities",
            "num_channels": len(channels), "spatial_shape": [], "dtype": "float32", "value_range": [],
            "is_patch_data": False, "channel_def": {str(i): c for i, c in enumerate(channels)}}
    return network_data_format(image, pred)


def _inferer(model: ExportModel) -> dict[str, Any]:
    return {"_target_": INFERER, "frame_size": [int(s) for s in model.config.data.frame_size], "chunk": 256}


def _preprocessing(model: ExportModel) -> list[dict[str, Any]]:
    return [{"_target_": LOADER, "keys": "image", "size": [int(s) for s in model.config.data.frame_size]}]


def _postprocessing(model: ExportModel) -> list[dict[str, Any]]:
    classes = _classes(model)
    return [{"_target_": WRITER, "output_dir": "@output_dir", "classes": _names(classes), "layout": _layout(classes)}]


def _model_card(model: ExportModel) -> ModelCardText:
    from medkd.nets import count_parameters

    cfg, classes = model.config, _classes(model)
    m, lay = cfg.model, classes.layout
    h = lay.transition_horizons_min[0] if lay.transition_horizons_min else None
    return ModelCardText(
        method_long="SurgFUTR (Sharma et al., arXiv 2510.12904): a teacher that sees the future clip teaches a "
                    "causal student to classify the change between current and future Sinkhorn-Knopp states; the "
                    f"student alone is deployed (variant `{cfg.variant.value}`)",
        network=f"`surgfutr_forecaster` (the student: `{m.encoder}` frame encoder, D={m.feature_dim}, state d="
                f"{m.state_dim}, K={m.prototypes} prototypes, window of {m.window} clips of {m.clip_frames} s, stride "
                f"{m.clip_stride} s; {count_parameters(model.network):,} parameters)",
        inference=f"video decoded at 1 fps, frames resized to {cfg.data.frame_size[0]} x {cfg.data.frame_size[1]}; "
                  f"every second forecast causally from the {cfg.past_seconds} s ending there (each frame encoded "
                  "once); windows before the first "
                  f"{cfg.past_seconds} s are padded with the first frame",
        input_output=(
            "- Input: a video (MP4/AVI/MOV/MKV for `monai.bundle run`; with medkd also a folder of 1-fps frame "
            "images), decoded at 1 fps.\n"
            "- Output: one CSV row per analysed second, `<video>_forecasts.csv`: `second`, `time`, `phase`, "
            f"`phase_confidence`, `next_phase_min@{h:g}min` (minutes to the next phase, capped at {h:g}), `rsd_min` "
            "(remaining minutes), presence probabilities `<class>@<Δ>s` at the first presence horizon and event "
            "probabilities `<event>@<h>s`; the label table lists the phases (label value = phase id + 1).\n"
            "- `network_data_format` in `configs/metadata.json` describes the network: `image` one causal window "
            f"`(3, {cfg.past_seconds}, {cfg.data.frame_size[0]}, {cfg.data.frame_size[1]})` of 1-fps RGB frames in "
            "[0, 1] (oldest first; the elapsed minutes are an optional second argument) -> `pred` the forecast "
            "vector `(B, C)` at its last second, channels named in `channel_def`."
        ),
        limitations=[
            "Trained on laparoscopic cholecystectomy: other procedures, sites or camera set-ups are out of scope.",
            "Forecasts are probabilities and capped times, not calibrated risks; the first seconds of a video see "
            "less history than the window needs.",
            "No SurgFUTR code was released: this is medkd's reconstruction of the paper (see the spec), not the "
            "authors' model, and no number of the paper is reproduced here.",
            "If the run was trained on synthetic data (medkd's demo), the weights are meaningless on real videos.",
            "`monai.bundle run` reads video files only; 1-fps PNG folders go through `medkd surgfutr predict` or "
            "the Python predictor.",
        ],
        how_to_run=_HOW_TO_RUN,
        equivalence="The rows of `monai.bundle run` are those of `medkd surgfutr predict` on the run: both call "
                    "`forecast_frames` and `forecast_row`.",
        training_keys=_TRAINING_KEYS,
        validation_score="change-conditioned tool mAP minus phase wMAE / h",
        validation_split="validation",
        eval_command="`medkd surgfutr eval --run RUN --data-root DIR --split test --json RUN/eval_test.json`",
    )


def _provenance(model: ExportModel) -> dict[str, Any]:
    data = model.config.data
    return {"variant": model.config.variant.value, "dataset": data.dataset, "layout": data.layout.value}


def _recipe(model: ExportModel) -> dict[str, Any]:
    from medkd.methods.surgfutr.predict import _class_names

    cfg, classes = model.config, _classes(model)
    return {"frame_size": [int(s) for s in cfg.data.frame_size], "fps": 1.0, "past_seconds": cfg.past_seconds,
            "classes": _class_names(classes), "horizons": _layout(classes)}


def bundle_predictor(path: Path, meta: dict[str, Any], network: Any, inferer: Any, device: Any) -> Any:
    """A ``forecasting`` predictor of a SurgFUTR bundle: 1-fps RGB frames -> the run predictor's forecasts (same
    keys, values, labels and ``metadata`` ``classes``/``horizons``)."""
    from medkd.errors import DataError
    from medkd.inference import Predictor, file_sha256
    from medkd.io.labels import labels_from_dicts

    if not isinstance(inferer, SurgFUTRForecastInferer) or not isinstance(network, SurgFUTRForecaster):
        raise DataError(Path(path) / "configs" / "inference.json",
                        "'inferer' or 'network_def' is not SurgFUTR's: not a SurgFUTR bundle")
    model = network.to(device).eval()
    info = meta.get("medkd") if isinstance(meta.get("medkd"), dict) else {}
    return Predictor(
        kind="forecasting", name=str(meta.get("name", Path(path).resolve().name)),
        version=str(meta.get("version", "?")), weights_sha256=file_sha256(Path(path) / "models" / "model.pt"),
        labels=labels_from_dicts(meta.get("label_classes", []), source=str(Path(path) / "configs" / "metadata.json")),
        run=lambda frames: inferer.forecast(model, frames), source=Path(path),
        metadata={"method": "surgfutr", "variant": info.get("variant"), "task": meta.get("task"),
                  "description": meta.get("description"), "intended_use": meta.get("intended_use"),
                  "frame_size": info.get("frame_size"), "fps": info.get("fps", 1.0),
                  "past_seconds": info.get("past_seconds"), "classes": info.get("classes", {}),
                  "horizons": info.get("horizons", {})},
    )


SURGFUTR_BUNDLE_SPEC = register_bundle_spec(BundleSpec(
    method="surgfutr",
    kind="forecasting",
    stages=("train",),
    load=_load,
    label_names=lambda model: ["none", *_classes(model)["phase_names"]],
    dataset_card=_dataset_card,
    describe=_describe,
    network_def=_network_def,
    network_data_format=_network_data_format,
    inferer=_inferer,
    preprocessing=_preprocessing,
    postprocessing=_postprocessing,
    model_card=_model_card,
    references=(SURGFUTR_REFERENCE,),
    provenance=_provenance,
    recipe=_recipe,
    input_patterns=INPUT_PATTERNS,
    component_modules=(_MODULE,),
    predictor=bundle_predictor,
))
