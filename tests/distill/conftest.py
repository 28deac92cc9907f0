# SPDX-License-Identifier: Apache-2.0
"""Fixtures of the distillation utility tests: tiny SynthLesion-2D data and a random teacher saved as a run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from medkd.data.synthetic.lesion_classes import LESION_CLASS_NAMES, write_synth_lesion_2d


def write_random_teacher_run(folder: Path, net: str = "kd_cnn_wide", params: dict[str, Any] | None = None) -> Path:
    """A seeded random classifier (``kd_cnn_wide`` at width 8 by default) saved as a classification run: enough to
    exercise a utility's loop, not to teach anything."""
    from medkd.distill.students import ClassifierInfo, write_student_run
    from medkd.engine.checkpoint import save_checkpoint

    info = ClassifierInfo(net=net, net_params=params or {"width": 8}, in_channels=1, num_classes=5,
                          class_names=tuple(sorted(LESION_CLASS_NAMES)), image_size=(16, 16))
    torch.manual_seed(0)
    write_student_run(folder, task="classification", info=info, role="teacher")
    save_checkpoint(folder / "student" / "best.pt", student=info.build(), teacher=None, optimizer=None, config={},
                    iteration=1)
    return folder


@pytest.fixture
def random_teacher_run() -> Callable[..., Path]:
    """:func:`write_random_teacher_run`, for tests that need another teacher."""
    return write_random_teacher_run


@pytest.fixture(scope="module")
def lesions_and_teacher(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data root of 5/20/10/10 images at 32x32, a random teacher run)."""
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=5, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)
    return root, write_random_teacher_run(tmp_path_factory.mktemp("teacher"))
