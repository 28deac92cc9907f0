# SPDX-License-Identifier: Apache-2.0
"""The strategy and utility framework: loop hooks in order, strategy modules trained and saved, parameter and
requirement errors, a strategy that owns its teacher, data subsets, and the ``medkd distill search|tool``
commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from medkd import api
from medkd.cli import main
from medkd.config import load_config
from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d
from medkd.distill import Strategy, create_strategy, create_utility, register_strategy
from medkd.distill.config import DistillConfig
from medkd.distill.data import build_data
from medkd.distill.registry import _unregister
from medkd.distill.tools import parse_params
from medkd.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
PRESET = REPO / "apps" / "distill" / "synth_lesion_kd.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.val_interval=3", "eval.log_interval=3",
        "data.batch_size=8", "data.image_size=[16, 16]", "teacher.net_params={width: 8}", "teacher.cache=false"]
CSV = ["data.layout=csv", "data.datalist=datalist.csv"]

CALLS: list[str] = []


class _Hooked(Strategy):
    """Records its hooks; adds a trainable gate's squared norm to every step."""

    requires_teacher = True

    def __init__(self, weight: float = 1.0, first_iterations: int = 2) -> None:
        self.weight, self.first_iterations = weight, first_iterations
        self.gate = torch.nn.Linear(3, 3)
        self.initial = self.gate.weight.detach().clone()

    def modules(self) -> torch.nn.Module:
        return self.gate

    def setup(self, task: Any) -> None:
        CALLS.append("setup")

    def pre_epoch(self, task: Any, epoch: int) -> None:
        CALLS.append(f"pre{epoch}")

    def post_epoch(self, task: Any, epoch: int) -> None:
        CALLS.append(f"post{epoch}")

    def train_step(self, task: Any, batch: dict[str, Any], iteration: int) -> tuple[torch.Tensor, dict[str, float]]:
        loss, logs = task.step_loss(batch, iteration)
        assert task.last.teacher["logits"].shape == task.last.student["logits"].shape
        extra = self.weight * self.gate.weight.square().sum()
        return loss + extra, {**logs, "gate": float(extra.detach())}

    def teardown(self, task: Any) -> None:
        CALLS.append("teardown")

    def run(self, ctx: Any) -> dict[str, Any]:
        first = ctx.train(out=ctx.out / "first", data=ctx.data.subset(classes=[0, 1]), teacher=None,
                          terms=ctx.cfg.distill.terms[:1], iterations=self.first_iterations)
        CALLS.append(f"first:{first['iterations']}")
        return ctx.train(hooks=self)

    def summary(self) -> dict[str, Any]:
        return {"moved": float((self.gate.weight.detach() - self.initial).abs().max())}


@pytest.fixture(scope="module", autouse=True)
def _registered() -> Any:
    register_strategy("toy_hooked")(_Hooked)
    yield
    _unregister("toy_hooked")


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=20, n_train=20, n_val=10,
                                 n_test=10, n_unlabelled=0, size=32)
    write_classification_datalist(root)
    return root


def test_strategy_hooks_run_in_order_and_its_modules_train_and_are_saved(lesions: Path, tmp_path: Path) -> None:
    CALLS.clear()
    out = tmp_path / "run"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[
        *FAST, "optim.iterations_per_epoch=2", "distill.strategy=toy_hooked",
        "distill.strategy_params={weight: 0.5, first_iterations: 3}"])
    assert CALLS == ["first:3", "setup", "pre0", "post0", "pre1", "post1", "pre2", "post2", "teardown"]
    assert summary["strategy"]["name"] == "toy_hooked" and summary["strategy"]["params"]["weight"] == 0.5
    assert summary["strategy"]["moved"] > 0  # the gate is in the optimiser
    assert summary["student"]["extra_params"] == 12  # the 3x3 gate and its bias, counted, never exported
    ckpt = torch.load(out / "student" / "last.pt", weights_only=True)
    assert set(ckpt["modules"]["strategy"]) == {"weight", "bias"}
    assert not any("gate" in k for k in ckpt["student"])
    assert (out / "first" / "student" / "best.pt").is_file()  # an intermediate training in a subfolder
    resolved = (out / "experiment.yaml").read_text()
    assert "toy_hooked" in resolved and "test_distill_strategy_framework" in resolved  # plugin module recorded
    metrics = [json.loads(line) for line in (out / "student" / "metrics.jsonl").read_text().splitlines()]
    assert any("gate" in m for m in metrics)


def test_strategy_parameters_and_requirements_are_checked(lesions: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'weigth'.*Did you mean 'weight'"):
        create_strategy("toy_hooked", weigth=1.0)
    with pytest.raises(KeyError, match="unknown strategy plugin 'kd'"):
        create_strategy("kd")
    code = main(["-q", "distill", "run", "--config", str(PRESET), "--data-root", str(lesions), "--out",
                 str(tmp_path / "r"), "--set", *FAST, "teacher.net=", "distill.strategy=toy_hooked"])
    assert code == 2  # needs a teacher


def test_strategy_for_another_task_is_refused(lesions: Path, tmp_path: Path) -> None:
    @register_strategy("toy_seg_only")
    class SegOnly(Strategy):
        """Segmentation only."""

        tasks = frozenset({"segmentation"})

    try:
        with pytest.raises(ConfigError, match="supports segmentation experiments, this one is classification"):
            api.distill_run(PRESET, lesions, tmp_path / "r", overrides=[*FAST, "distill.strategy=toy_seg_only"],
                            progress=False)
    finally:
        _unregister("toy_seg_only")


def _two_channel_teacher(folder: Path) -> Path:
    """A random ``kd_cnn`` taking 2 input channels (a multi-modal teacher), saved as a classification run."""
    from medkd.data.synthetic.lesion_classes import LESION_CLASS_NAMES
    from medkd.distill.students import ClassifierInfo, write_student_run
    from medkd.engine.checkpoint import save_checkpoint

    info = ClassifierInfo(net="kd_cnn", net_params={"width": 4}, in_channels=2, num_classes=5,
                          class_names=tuple(sorted(LESION_CLASS_NAMES)), image_size=(16, 16))
    write_student_run(folder, task="classification", info=info, role="teacher")
    save_checkpoint(folder / "student" / "best.pt", student=info.build(), teacher=None, optimizer=None, config={},
                    iteration=1)
    return folder


def test_a_strategy_owning_its_teacher_gets_it_unprobed_and_untrained(lesions: Path, tmp_path: Path) -> None:
    seen: dict[str, Any] = {}

    @register_strategy("toy_own_teacher")
    class OwnTeacher(Strategy):
        """Feeds its teacher the image twice (2 channels); trains the student with CE."""

        owns_teacher = True

        def run(self, ctx: Any) -> dict[str, Any]:
            seen["teacher"] = ctx.teacher
            if ctx.teacher is not None:
                x = ctx.data.tensors("val")[0][:3].to(ctx.device)
                seen["logits"] = tuple(ctx.teacher.network(torch.cat([x, x], 1)).shape)
            return ctx.train(teacher=None, terms=ctx.cfg.distill.terms[:1])

    try:
        teacher = _two_channel_teacher(tmp_path / "mm")
        summary = api.distill_run(PRESET, lesions, tmp_path / "ckpt", progress=False, overrides=[
            *FAST, f"teacher.checkpoint={teacher}", "distill.strategy=toy_own_teacher", "eval.teacher=true"])
        # loaded and checked (task, classes), never run on the 1-channel images: no latency, no test metrics
        assert summary["teacher"] == {"source": str(teacher), "net": "kd_cnn", "params": summary["teacher"]["params"]}
        assert seen["teacher"].source == teacher and seen["logits"] == (3, 5)
        seen.clear()
        summary = api.distill_run(PRESET, lesions, tmp_path / "net", progress=False,
                                  overrides=[*FAST, "distill.strategy=toy_own_teacher"])  # teacher.net: kd_cnn_wide
        assert seen["teacher"] is None and "teacher" not in summary and "teacher_training" not in summary
        assert not (tmp_path / "net" / "teacher").exists()  # teacher.net is the strategy's to use
    finally:
        _unregister("toy_own_teacher")


def test_subset_by_classes_and_metadata_keeps_label_indices(lesions: Path) -> None:
    data = build_data(load_config(DistillConfig, PRESET, [*FAST, *CSV]), lesions)
    two = data.subset(classes=[1, 3])
    _, labels, _ = two.tensors("test")
    assert set(labels.tolist()) <= {1, 3} and two.num_classes == data.num_classes
    assert two.train_size == int(torch.isin(data.tensors("train")[1], torch.tensor([1, 3])).sum())
    a = data.subset(metadata={"modality": "A"})
    assert {m["modality"] for m in a.metadata("val")} == {"A"}
    assert a.train_size + data.subset(metadata={"modality": "B"}).train_size == data.train_size
    batch = next(iter(a.batches(0)))
    allowed = set(a.tensors("train")[2])
    assert set(batch["case"]) <= allowed
    with pytest.raises(DataError, match="no metadata 'site'"):
        data.subset(metadata={"site": "X"})
    with pytest.raises(DataError, match="no train image"):
        data.subset(metadata={"modality": "C"})


def test_tool_and_search_commands(lesions: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "gap"
    assert main(["-q", "distill", "tool", "capacity_gap", "--config", str(PRESET), "--data-root", str(lesions),
                 "--out", str(out), "--set", *FAST, "--param",
                 "candidates=[{name: wide24, net: kd_cnn_wide, net_params: {width: 24}}, kd_cnn_wide]"]) == 0
    result = json.loads((out / "capacity_gap.json").read_text())
    assert result["chosen"] == "wide24" and result["student_params"] == 294357
    assert "chosen: wide24" in capsys.readouterr().out
    # the wrong command names the right one; unknown utilities and parameters exit 2
    assert main(["-q", "distill", "search", "capacity_gap", "--config", str(PRESET), "--data-root",
                 str(lesions), "--out", str(out), "--param", "candidates=[kd_cnn_wide]"]) == 2
    assert "medkd distill tool capacity_gap" in capsys.readouterr().err
    assert main(["-q", "distill", "tool", "capacity_gap", "--config", str(PRESET), "--data-root", str(lesions),
                 "--out", str(out), "--param", "candidate=[kd_cnn_wide]"]) == 2
    assert "Did you mean 'candidates'" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        parse_params(["budget"])
    with pytest.raises(ConfigError, match="no parameter"):
        create_utility("capacity_gap", nets=["x"])


def test_list_shows_strategies_and_utility_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["distill", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy_hooked" in out and "strategy" in out
    row = next(line for line in out.splitlines() if line.startswith("capacity_gap"))
    assert " tool " in row
