# SPDX-License-Identifier: Apache-2.0
"""Teacher-as-annotator (spec §4): CCC(x, x) = 1, CCC(x, -x) = -1, a bias lowers CCC, per-column CCC; the ``ccc``
loss plugin; the target table; a tiny run whose student learns only from the teacher's annotations."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from medkd.data.synthetic.lesion_classes import write_synth_lesion_2d
from medkd.distill import create_loss, get_plugin
from medkd.distill.config import OptimConfig
from medkd.distill.utilities.annotator import Annotator, ccc, ccc_loss, fit_regressor, read_target_split
from medkd.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_annotator.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.log_interval=3", "data.batch_size=8",
        "data.image_size=[16, 16]", "teacher.net_params={width: 8}"]


def _centred(seed: int, n: int = 50) -> torch.Tensor:
    x = torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x - x.mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ccc_of_itself_is_one_and_of_its_negation_minus_one(seed: int) -> None:
    x = _centred(seed)
    assert float(ccc(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(ccc(x, -x)) == pytest.approx(-1.0, abs=1e-12)
    assert float(ccc_loss(x, x)) == pytest.approx(0.0, abs=1e-6)


def test_a_bias_or_a_scale_lowers_ccc_but_not_pearson() -> None:
    x = _centred(3)
    values = [float(ccc(x, x + b)) for b in (0.0, 0.2, 0.5, 1.0, 2.0)]
    assert values[0] == pytest.approx(1.0) and all(a > b for a, b in zip(values, values[1:]))
    assert float(ccc(x, 2.0 * x)) < 1.0  # perfectly correlated, not concordant
    assert float(ccc(x, x + 1.0)) == pytest.approx(float(ccc(x + 1.0, x)))  # symmetric


def test_ccc_matches_the_formula_and_is_vectorised_over_columns() -> None:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(40, 3, generator=g, dtype=torch.float64)
    b = 0.5 * a + torch.randn(40, 3, generator=g, dtype=torch.float64) + torch.tensor([0.0, 1.0, -2.0])
    per_column = ccc(a, b)
    assert per_column.shape == (3,)
    for k in range(3):
        x, y = a[:, k].numpy(), b[:, k].numpy()
        expected = 2 * np.cov(x, y, bias=True)[0, 1] / (x.var() + y.var() + (x.mean() - y.mean()) ** 2)
        assert float(per_column[k]) == pytest.approx(expected, rel=1e-10)
        assert float(ccc(a[:, k], b[:, k])) == pytest.approx(float(per_column[k]), rel=1e-12)
    assert float(ccc_loss(a, b)) == pytest.approx(float((1 - per_column).mean()))


def test_ccc_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="same shape"):
        ccc(torch.zeros(4), torch.zeros(5))
    with pytest.raises(ValueError, match="same shape"):
        ccc(torch.zeros(2, 2, 2), torch.zeros(2, 2, 2))


def test_the_ccc_loss_plugin_is_one_minus_ccc_with_a_gradient_to_the_student_only() -> None:
    loss = create_loss("ccc")
    s = torch.tensor([[0.1], [0.5], [0.2], [0.9]], requires_grad=True)
    t = torch.tensor([[0.0], [0.6], [0.1], [1.0]], requires_grad=True)
    value = loss({"logits": s}, {"logits": t}, {})["ccc"]
    assert float(value.detach()) == pytest.approx(1 - float(ccc(s[:, 0].detach(), t[:, 0].detach())), rel=1e-6)
    value.backward()
    assert s.grad is not None and t.grad is None
    assert float(loss({"logits": s.detach()}, {"logits": s.detach()}, {})["ccc"]) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ConfigError, match="eps"):
        create_loss("ccc", eps=0.0)


def test_regressors_learn_standardised_targets_and_predict_in_target_units() -> None:
    torch.manual_seed(0)
    x = torch.randn(64, 1, 2, 2)
    y = 50.0 + 10.0 * x.flatten(1).sum(1)  # an ejection fraction in percent, say
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    seen: list[torch.Tensor] = []

    def loss_fn(p: torch.Tensor, t: torch.Tensor, it: int) -> tuple[torch.Tensor, dict]:
        if it == 1:
            seen.append(p.detach())
        return ccc_loss(p, t), {}

    out = fit_regressor(net, x, y, loss_fn, optim=OptimConfig(lr=0.05, iterations=300), iterations=300,
                        batch_size=16, device=torch.device("cpu"))
    assert torch.equal(seen[0], torch.zeros_like(seen[0]))  # the output layer starts at zero: the mean
    assert out["target_mean"] == pytest.approx(float(y.mean()), rel=1e-5)
    with torch.no_grad():
        pred = net(x)[:, 0]
    assert float(ccc(pred, y)) > 0.9 and abs(float(pred.mean() - y.mean())) < 2.0
    with pytest.raises(ConfigError, match="no 1-output nn.Linear"):
        fit_regressor(torch.nn.Flatten(), x, y, loss_fn, optim=OptimConfig(), iterations=1, batch_size=4,
                      device=torch.device("cpu"))


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=24, n_train=16, n_val=4,
                                 n_test=12, n_unlabelled=20, size=32)


def test_target_split_reads_images_and_targets(lesions: Path, tmp_path: Path) -> None:
    part = read_target_split(lesions, "metadata.csv", "severity", "test", image_size=(16, 16))
    rows = [r for r in csv.DictReader((lesions / "metadata.csv").open()) if r["split"] == "test"]
    assert part.images.shape == (12, 1, 16, 16) and part.cases == [r["case"] for r in rows]
    assert torch.allclose(part.targets, torch.tensor([float(r["severity"]) for r in rows]))
    with pytest.raises(DataError, match="lacks the column"):
        read_target_split(lesions, "metadata.csv", "ejection_fraction", "test", image_size=(16, 16))
    with pytest.raises(DataError, match="no rows of split"):
        read_target_split(lesions, "metadata.csv", "severity", "nope", image_size=(16, 16))
    blank = tmp_path / "blank.csv"
    blank.write_text("image,split,severity\nunlabelled/unlabelled_00000.png,unlabelled,\n")
    with pytest.raises(DataError, match="not a number"):
        read_target_split(lesions, blank, "severity", "unlabelled", image_size=(16, 16))
    assert read_target_split(lesions, blank, "severity", "unlabelled", image_size=(16, 16),
                             allow_missing=True).targets.isnan().all()


@pytest.fixture(scope="module")
def annotated(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    from medkd import api

    out = tmp_path_factory.mktemp("annotator")
    return out, api.distill_tool("annotator", PRESET, lesions, out, overrides=FAST, progress=False)


def test_annotator_run_writes_annotations_runs_and_scores(annotated: tuple[Path, dict]) -> None:
    out, result = annotated
    rows = list(csv.DictReader((out / "annotations.csv").open()))
    assert len(rows) == 20 and list(rows[0]) == ["image", "case", "severity"]
    assert all(r["image"].startswith("unlabelled/") for r in rows)
    assert result["student"]["trained_on"] == "unlabelled" and result["student"]["n_train"] == 20
    assert result["baseline"]["trained_on"] == "train" and result["baseline"]["n_train"] == 16
    assert result["teacher"]["split"] == "teacher_train" and result["teacher"]["iterations"] == 4
    for role in ("teacher", "student", "baseline"):
        assert -1.0 <= result[role]["ccc"] <= 1.0 and result[role]["mae"] >= 0.0
        assert json.loads((out / role / "student.json").read_text())["num_classes"] == 1
    assert "ccc" in result["annotations"]  # the synthetic archive knows the truth
    assert json.loads((out / "annotator.json").read_text())["test_n"] == 12


def test_the_student_learns_only_from_the_annotations(annotated: tuple[Path, dict], lesions: Path,
                                                      tmp_path: Path) -> None:
    from medkd import api

    out, first = annotated
    with (lesions / "metadata.csv").open() as f:  # hide the truth of the unlabelled images
        rows = list(csv.DictReader(f))
    for r in rows:
        if r["split"] == "unlabelled":
            r["severity"] = ""
    with (lesions / "hidden.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    second = api.distill_tool("annotator", PRESET, lesions, tmp_path, overrides=[*FAST,
                              f"teacher.checkpoint={out / 'teacher'}"], params={"table": "hidden.csv"},
                              progress=False)
    assert second["teacher"]["source"] == str(out / "teacher") and not (tmp_path / "teacher").exists()
    assert second["teacher"]["ccc"] == first["teacher"]["ccc"]  # the 1-output run is reloaded as the teacher
    assert second["student"]["ccc"] == pytest.approx(first["student"]["ccc"], abs=1e-5)
    assert "ccc" not in second["annotations"]


@pytest.mark.parametrize(("params", "sets", "error", "match"), [
    ({"teacher_loss": "mae"}, [], ConfigError, "Did you mean 'mse'"),
    ({"iterations": -1}, [], ConfigError, ">= 0"),
    ({}, ["distill.terms=[{name: ce, plugin: ce}]"], ConfigError, "batch key 'label'"),
    ({}, ["teacher.net="], ConfigError, "needs teacher.net"),
    ({"target": "weight"}, [], DataError, "lacks the column"),
])
def test_bad_input(params: dict, sets: list[str], error: type, match: str, lesions: Path, tmp_path: Path) -> None:
    from medkd import api

    with pytest.raises(error, match=match):
        api.distill_tool("annotator", PRESET, lesions, tmp_path, overrides=[*FAST, *sets], params=params,
                         progress=False)


def test_registered_as_a_tool() -> None:
    assert get_plugin("annotator", kind="utility") is Annotator and Annotator.command == "tool"
