# SPDX-License-Identifier: Apache-2.0
"""``partition_students`` (MSD, spec §3.10): each case reaches its partition's student, unknown keys raise, the
routed run's layout and summary, and one partition holding all the data is bit-equal to a plain KD run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from medkd import api
from medkd.data.synthetic.lesion_classes import write_classification_datalist, write_synth_lesion_2d
from medkd.distill import create_strategy
from medkd.distill.routing import PartitionedStudent, UnknownPartitionError, load_partitioned, predict_routed
from medkd.distill.students import load_classifier
from medkd.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[2]
KD = REPO / "apps" / "distill" / "synth_lesion_kd.yaml"
PRESET = REPO / "apps" / "distill" / "synth_lesion_partition_students.yaml"
FAST = ["optim.iterations=6", "teacher.iterations=4", "eval.val_interval=3", "eval.log_interval=3",
        "data.batch_size=8", "data.image_size=[16, 16]", "teacher.net_params={width: 8}", "teacher.cache=false"]


class _Const(nn.Module):
    """Outputs the constant logits ``value`` for every case (and counts the cases it saw)."""

    def __init__(self, value: float, classes: int = 3) -> None:
        super().__init__()
        self.value, self.classes, self.seen = value, classes, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return torch.full((len(x), self.classes), self.value)


@pytest.mark.parametrize("keys", [["B", "A", "C", "B", "A"], torch.tensor([1, 0, 2, 1, 0])])
def test_each_case_reaches_its_partitions_student(keys: list[str] | torch.Tensor) -> None:
    names = ("A", "B", "C") if isinstance(keys, list) else ("0", "1", "2")
    students = {n: _Const(float(i + 1)) for i, n in enumerate(names)}
    model = PartitionedStudent(students, key="modality")
    out = model(torch.zeros(5, 1, 4, 4), keys)
    assert out[:, 0].tolist() == [2.0, 1.0, 3.0, 2.0, 1.0]
    assert [students[n].seen for n in names] == [2, 2, 1]  # one grouped forward per partition
    routed = predict_routed(model, torch.zeros(5, 1, 4, 4), keys, batch=2)  # batched: groups per batch
    assert routed[:, 0].tolist() == [2.0, 1.0, 3.0, 2.0, 1.0]


def test_unknown_keys_raise_naming_the_value_and_the_known_ones() -> None:
    model = PartitionedStudent({"A": _Const(1.0), "B": _Const(2.0)}, key="modality")
    with pytest.raises(UnknownPartitionError, match=r"modality='C'.*known modality values: 'A', 'B'"):
        model(torch.zeros(3, 1, 4, 4), ["A", "C", "B"])
    with pytest.raises(KeyError):  # an UnknownPartitionError is a KeyError
        predict_routed(model, torch.zeros(1, 1, 4, 4), ["b"])
    with pytest.raises(ValueError, match="2 keys for 3 cases"):
        model(torch.zeros(3, 1, 4, 4), ["A", "B"])
    with pytest.raises(ConfigError, match="cannot name a student"):
        PartitionedStudent({"0.5": _Const(1.0)})


@pytest.mark.parametrize(("params", "message"), [
    ({"key": ""}, "key must name a metadata column"),
    ({"values": []}, "non-empty list"),
    ({"values": ["A", "A"]}, "values repeat"),
    ({"values": ["a.b"]}, "cannot name a student folder"),
    ({"fallbak": True}, "Did you mean 'fallback'"),
])
def test_bad_parameters(params: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        create_strategy("partition_students", **params)


@pytest.fixture(scope="module")
def lesions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = write_synth_lesion_2d(tmp_path_factory.mktemp("lesions"), n_teacher_train=20, n_train=24, n_val=12,
                                 n_test=12, n_unlabelled=0, size=32)
    write_classification_datalist(root)
    with (root / "datalist.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    with (root / "one_modality.csv").open("w", newline="") as f:  # every case of modality A: one partition
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "modality": "A"} for row in rows)
    return root


@pytest.fixture(scope="module")
def plain(lesions: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plain KD run on the one-modality datalist (its teacher is trained first and shared below)."""
    out = tmp_path_factory.mktemp("runs") / "plain_kd"
    api.distill_run(KD, lesions, out, progress=False,
                    overrides=[*FAST, "data.layout=csv", "data.datalist=one_modality.csv"])
    return out


@pytest.fixture(scope="module")
def routed(lesions: Path, plain: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("runs") / "msd"
    summary = api.distill_run(PRESET, lesions, out, progress=False,
                              overrides=[*FAST, f"teacher.checkpoint={plain / 'teacher'}"])
    return out, summary


def test_run_layout_routing_file_and_summary(routed: tuple[Path, dict], lesions: Path) -> None:
    out, summary = routed
    routing = json.loads((out / "routing.json").read_text())
    assert routing == {"key": "modality", "partitions": {"A": "partitions/A", "B": "partitions/B"}}
    for value in ("A", "B"):
        assert (out / "partitions" / value / "student" / "best.pt").is_file()
        assert json.loads((out / "partitions" / value / "run.json").read_text())["kind"] == "classification"
    assert (out / "student" / "best.pt").is_file()  # the global (fallback) student: RUN is a normal run
    strategy = summary["strategy"]
    assert strategy["name"] == "partition_students" and strategy["values"] == ["A", "B"]
    assert strategy["routed"]["test"]["n"] == 12
    assert sum(strategy["partitions"][v]["test"]["n"] for v in ("A", "B")) == 12
    assert sum(strategy["partitions"][v]["train_size"] for v in ("A", "B")) == 24
    # the fallback is the run's own student: its whole-split accuracy is the summary's
    assert strategy["global"]["test"]["accuracy"] == pytest.approx(summary["student"]["best"]["test"]["accuracy"])
    # routed accuracy is the case-weighted mean of the partitions' accuracies
    parts = strategy["partitions"]
    weighted = sum(parts[v]["test"]["accuracy"] * parts[v]["test"]["n"] for v in ("A", "B")) / 12
    assert strategy["routed"]["test"]["accuracy"] == pytest.approx(weighted)


def test_load_partitioned_routes_every_test_case_through_its_own_student(routed: tuple[Path, dict],
                                                                        lesions: Path) -> None:
    out, _ = routed
    model = load_partitioned(out)
    assert model.key == "modality" and model.values == ("A", "B") and len(model.class_names) == 5
    with (lesions / "datalist.csv").open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["split"] == "test"]
    images = torch.rand(len(rows), 1, 16, 16)
    keys = [r["modality"] for r in rows]
    got = predict_routed(model, images, keys)
    for value in ("A", "B"):
        _, net = load_classifier(out / "partitions" / value)
        mask = torch.tensor([k == value for k in keys])
        with torch.no_grad():
            assert torch.equal(got[mask], net(images[mask]))


def test_one_partition_holding_all_data_is_bit_equal_to_plain_kd(lesions: Path, plain: Path, tmp_path: Path) -> None:
    out = tmp_path / "one"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[
        *FAST, "data.datalist=one_modality.csv", f"teacher.checkpoint={plain / 'teacher'}"])
    assert json.loads((out / "routing.json").read_text())["partitions"] == {"A": "partitions/A"}
    reference = torch.load(plain / "student" / "last.pt", weights_only=True)["student"]
    for run in (out / "partitions" / "A", out):  # the partition and the fallback student
        state = torch.load(run / "student" / "last.pt", weights_only=True)["student"]
        assert state.keys() == reference.keys()
        assert all(torch.equal(state[k], reference[k]) for k in reference)
    strategy = summary["strategy"]
    assert strategy["routed"]["test"]["accuracy"] == strategy["partitions"]["A"]["test"]["accuracy"]


def test_without_fallback_the_largest_partition_is_the_run(routed: tuple[Path, dict], lesions: Path, plain: Path,
                                                           tmp_path: Path) -> None:
    out = tmp_path / "nofallback"
    summary = api.distill_run(PRESET, lesions, out, progress=False, overrides=[
        *FAST, f"teacher.checkpoint={plain / 'teacher'}", "distill.strategy_params={fallback: false}"])
    sizes = {v: p["train_size"] for v, p in routed[1]["strategy"]["partitions"].items()}
    largest = max(sizes, key=sizes.get)
    partitions = json.loads((out / "routing.json").read_text())["partitions"]
    assert partitions[largest] == "." and not (out / "partitions" / largest).exists()
    assert "global" not in summary["strategy"]
    assert summary["student"]["best"]["test"]["n"] == summary["strategy"]["partitions"][largest]["test"]["n"]
    assert load_partitioned(out).values == ("A", "B")


@pytest.mark.parametrize(("sets", "error", "message"), [
    (["distill.strategy_params={values: [A, C]}"], ConfigError, r"values \['C'\] have no train case"),
    (["distill.strategy_params={values: [A]}"], ConfigError, r"(val|test) cases have modality values \['B'\] without"),
    (["distill.strategy_params={key: scanner}"], DataError, "no metadata 'scanner'"),
    (["data.layout=folders"], DataError, "use data.layout csv"),
])
def test_bad_partitions_fail_before_training(sets: list[str], error: type, message: str, lesions: Path,
                                             plain: Path, tmp_path: Path) -> None:
    with pytest.raises(error, match=message):
        api.distill_run(PRESET, lesions, tmp_path / "bad", progress=False,
                        overrides=[*FAST, f"teacher.checkpoint={plain / 'teacher'}", *sets])
    assert not (tmp_path / "bad" / "partitions").exists()
