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


# ---- routed at inference and in bundles --------------------------------------------------------------------------
def _test_rows(lesions: Path) -> list[dict[str, str]]:
    with (lesions / "datalist.csv").open(newline="") as f:
        return [r for r in csv.DictReader(f) if r["split"] == "test"]


def _partition_probs(out: Path, value: str, image: torch.Tensor) -> torch.Tensor:
    """What the run's own partition student gives for one image (the training reader's resize, softmax)."""
    from medkd.data.classification import resize_image

    _, net = load_classifier(out / "partitions" / value)
    with torch.no_grad():
        return torch.softmax(net(resize_image(image, (16, 16))[None]), 1)[0]


def test_routed_run_predictor_sends_each_image_to_its_partitions_student(routed: tuple[Path, dict],
                                                                         lesions: Path) -> None:
    from medkd.data.classification import load_image
    from medkd.inference import check_output, load_predictor

    out, _ = routed
    predictor = load_predictor(out, "cpu")
    assert predictor.kind == "classification" and predictor.metadata["route_key"] == "modality"
    assert [label.name for label in predictor.labels] == list(load_partitioned(out).class_names)
    for row in _test_rows(lesions):
        image = load_image(lesions / row["image"])
        got = predictor({"image": image, "modality": row["modality"]})
        check_output("classification", got, image)
        assert got["partition"] == row["modality"]
        want = _partition_probs(out, row["modality"], torch.from_numpy(image))
        assert torch.allclose(torch.from_numpy(got["probabilities"]), want, atol=1e-6)
    with pytest.raises(ValueError, match=r"routes each image by 'modality'.*--meta modality=VALUE"):
        predictor(image)  # no key: no silent fallback to a student
    with pytest.raises(UnknownPartitionError, match="modality='C'"):
        predictor({"image": image, "modality": "C"})


def test_routed_bundle_routes_like_the_run_in_medkd_and_in_monai_bundle_run(routed: tuple[Path, dict],
                                                                            lesions: Path, tmp_path: Path) -> None:
    import shutil
    import subprocess
    import sys

    from medkd.bundle import export_bundle, verify_bundle
    from medkd.data.classification import load_image
    from medkd.inference import load_predictor

    out, _ = routed
    bundle = export_bundle(out, tmp_path / "models" / "msd_routed")
    failed = [str(r) for r in verify_bundle(bundle) if not r.ok]
    assert not failed, failed
    meta = json.loads((bundle / "configs" / "metadata.json").read_text())
    assert meta["medkd"]["kind"] == "classification" and meta["medkd"]["config"]["route_key"] == "modality"
    assert [c["value"] for c in meta["label_classes"]] == [0, 1, 2, 3, 4]  # every class, the first included
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"].endswith("routed_classifier")
    assert set(inference["network_def"]["students"]) == {"A", "B"}
    assert "routed by `modality`" in (bundle / "docs" / "README.md").read_text()

    rows = _test_rows(lesions)
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for row in rows:  # images with their sidecar JSONs, as monai.bundle run reads the key
        src = lesions / row["image"]
        shutil.copy(src, inputs / src.name)
        (inputs / f"{src.stem}.json").write_text(json.dumps({"modality": row["modality"]}))
    done = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "--config_file",
                           str(bundle / "configs" / "inference.json"), "--bundle_root", str(bundle),
                           "--dataset_dir", str(inputs), "--output_dir", str(tmp_path / "eval")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with (tmp_path / "eval" / "predictions.csv").open(newline="") as f:
        written = {r["file"]: r for r in csv.DictReader(f)}
    assert len(written) == len(rows)
    from_bundle, from_run = load_predictor(bundle, "cpu"), load_predictor(out, "cpu")
    for row in rows:
        name = Path(row["image"]).name
        image = {"image": load_image(inputs / name), "modality": row["modality"]}
        a, b = from_bundle(image), from_run(image)
        assert a["label"] == b["label"] == int(written[name]["label"])
        assert written[name]["modality"] == a["partition"] == row["modality"]
        probs = [float(written[name][f"p_{c}"]) for c in load_partitioned(out).class_names]
        assert max(abs(p - q) for p, q in zip(probs, a["probabilities"])) < 1e-5
        assert max(abs(p - q) for p, q in zip(b["probabilities"], a["probabilities"])) < 1e-6


def test_a_missing_sidecar_is_an_error_naming_the_file(tmp_path: Path) -> None:
    from PIL import Image

    from medkd.distill.bundle_components import LoadClassificationImaged

    Image.new("L", (8, 6)).save(tmp_path / "case.png")
    with pytest.raises(DataError, match=r"case\.json.*routes each image by 'modality'"):
        LoadClassificationImaged(route_key="modality")({"image": str(tmp_path / "case.png")})
    (tmp_path / "case.json").write_text('{"site": "x"}')
    with pytest.raises(DataError, match="has no 'modality'"):
        LoadClassificationImaged(route_key="modality")({"image": str(tmp_path / "case.png")})
    (tmp_path / "case.json").write_text('{"modality": "A"}')
    got = LoadClassificationImaged(route_key="modality")({"image": str(tmp_path / "case.png")})["image"]
    assert tuple(got.shape) == (1, 6, 8) and got.meta["modality"] == "A"


def test_a_plain_classification_run_exports_an_unrouted_classifier_bundle(plain: Path, tmp_path: Path) -> None:
    from medkd.bundle import export_bundle, verify_bundle
    from medkd.inference import load_predictor

    bundle = export_bundle(plain, tmp_path / "plain_kd")
    assert all(r.ok for r in verify_bundle(bundle))
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["network_def"]["_target_"].endswith(".classifier")
    predictor = load_predictor(bundle, "cpu")
    assert predictor.metadata["route_key"] is None
    image = torch.rand(1, 16, 16)
    _, net = load_classifier(plain)
    with torch.no_grad():
        want = torch.softmax(net(image[None]), 1)[0]
    got = predictor(image.numpy())
    assert "partition" not in got and torch.allclose(torch.from_numpy(got["probabilities"]), want, atol=1e-6)


def test_distill_predict_writes_a_row_per_image_and_reports_failures(routed: tuple[Path, dict], lesions: Path,
                                                                      tmp_path: Path) -> None:
    from medkd.cli import main

    out, summary = routed
    counts = api.distill_predict(out, out=tmp_path / "pred.csv", datalist=lesions / "datalist.csv", split="test",
                                 progress=False)
    with (tmp_path / "pred.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert counts == {"ok": 12, "failed": 0} and [r["partition"] for r in rows] == [
        r["modality"] for r in _test_rows(lesions)]
    truth = {r["image"]: r["label"] for r in _test_rows(lesions)}
    accuracy = sum(r["class"] == truth[str(Path(r["file"]).relative_to(lesions))] for r in rows) / len(rows)
    assert accuracy == pytest.approx(summary["strategy"]["routed"]["test"]["accuracy"])  # the run's own routing

    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not a png")
    good = lesions / _test_rows(lesions)[0]["image"]
    code = main(["--quiet", "distill", "predict", str(out), str(good), str(corrupt), "--meta", "modality=A",
                 "--out", str(tmp_path / "cli.csv")])
    with (tmp_path / "cli.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert code == 0 and [r["status"] for r in rows] == ["ok", "failed"]
    assert rows[0]["partition"] == "A" and "corrupt.png" in rows[1]["error"]
    counts = api.distill_predict(out, [good], out=tmp_path / "nokey.csv", progress=False)
    assert counts == {"ok": 0, "failed": 1}


def test_eval_of_a_routed_run_is_the_routed_accuracy(routed: tuple[Path, dict], lesions: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    out, summary = routed
    monkeypatch.chdir(lesions.parent)  # a relative data root (the CSV datalist is relative to it)
    result = api.distill_eval(out, lesions.name, split="test", progress=False)
    assert result["routed_by"] == "modality" and result["partitions"] == ["A", "B"]
    assert result["accuracy"] == pytest.approx(summary["strategy"]["routed"]["test"]["accuracy"])
