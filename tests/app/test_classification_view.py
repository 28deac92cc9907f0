# SPDX-License-Identifier: Apache-2.0
"""The app's classification page (medkd distill's ``app_view`` for ``classification`` models): a routed model asks
for the image's key value and answers with that value's student; probabilities as a table, bars and a CSV. Driven
through the real app with ``AppTest`` and a real routed predictor of two tiny students."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
SEEN: list[float] = []


class _Prefers(nn.Module):
    """Logits favouring class ``favourite`` (and records the mean intensity it was given)."""

    def __init__(self, favourite: int) -> None:
        super().__init__()
        self.favourite = favourite

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        SEEN.append(float(x.mean()))
        logits = torch.zeros(len(x), 3)
        logits[:, self.favourite] = 2.0
        return logits


def _routed(folder: str):
    from medkd.distill.predict import classification_predictor
    from medkd.distill.routing import PartitionedStudent

    model = PartitionedStudent({"A": _Prefers(0), "B": _Prefers(2)}, key="modality")
    return classification_predictor(model, class_names=["oval", "round", "spiculated"], image_size=(8, 8),
                                    name=Path(folder).name, version="1", weights=Path(__file__), source=Path(folder),
                                    route_key="modality", metadata={"method": "distill"})


@pytest.fixture
def app(start_app):
    return start_app("msd_routed", _routed)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.full((12, 16), 204, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_routed_model_classifies_with_the_student_of_the_chosen_value(app):
    at = app
    SEEN.clear()
    at.file_uploader(key="upload").set_value([("lesion.png", _png(), "image/png")]).run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    choice = at.selectbox(key="cls_route_modality")
    assert choice.options == ["A", "B"] and choice.value == "A"
    table = at.dataframe[0].value
    assert table["class"].tolist()[0] == "oval" and set(table["partition"]) == {"A"}
    assert table["probability"].sum() == pytest.approx(1.0, abs=2e-3)
    assert SEEN and SEEN[-1] == pytest.approx(0.8)  # 204 / 255: the training reader's scaling
    choice.set_value("B").run()
    table = at.dataframe[0].value
    assert table["class"].tolist()[0] == "spiculated" and set(table["partition"]) == {"B"}
    assert [b.label for b in at.download_button] == ["Probabilities (CSV)"]


def test_rows_and_csv():
    from medkd.distill.app_view import probability_rows, rows_csv

    rows = probability_rows({"probabilities": np.array([0.2, 0.5, 0.3]), "label": 1}, model="m",
                            names=["a", "b", "c"])
    assert [(r["class"], r["probability"], r["partition"]) for r in rows] == [("b", 0.5, ""), ("c", 0.3, ""),
                                                                             ("a", 0.2, "")]
    text = rows_csv(rows, "Research use only.").decode().splitlines()
    assert text[0] == "# Research use only." and text[1] == "model,class,probability,partition"
    assert text[2] == "m,b,0.5," and len(text) == 5
