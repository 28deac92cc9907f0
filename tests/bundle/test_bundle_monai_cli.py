# SPDX-License-Identifier: Apache-2.0
"""The exported bundles under MONAI's own command line, offline: ``run``, ``verify_net_in_out``, ``verify_metadata``.

``python -m monai.bundle run`` on a folder of NIfTI files must write the masks of ``medkd bcp predict``
(:func:`medkd.methods.bcp.predict.predict_paths`) voxel for voxel, with the same affines. The subprocesses (each
imports torch and MONAI, ~6 s of CPU) are started together by one module fixture and checked by the tests; the
broken-bundle cases call the same ``monai.bundle`` functions in process (``fire`` only maps their exceptions to a
non-zero exit).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from medkd.bundle import SCHEMA_PATH, export_bundle
from medkd.methods.bcp.predict import predict_paths

pytestmark = [
    pytest.mark.filterwarnings("ignore:parsing config_file:UserWarning"),  # MONAI 1.6: configs run code (trusted here)
    pytest.mark.filterwarnings("ignore:NvImgCodecPydicomReader:UserWarning"),
    pytest.mark.filterwarnings("ignore:No hash value provided:UserWarning"),  # our own schema file, never downloaded
]

KINDS = ("2d", "3d")
REPO = Path(__file__).resolve().parents[2]


def _break_metadata(bundle: Path, folder: Path, edit) -> Path:
    broken = Path(shutil.copytree(bundle / "configs", folder / "configs"))
    meta = json.loads((broken / "metadata.json").read_text())
    edit(meta)
    (broken / "metadata.json").write_text(json.dumps(meta))
    return broken / "metadata.json"


def _with_a_2d_image(volumes: Path, folder: Path) -> Path:
    """The volumes plus a 2D NIfTI image (a single slice, its own spacing and origin)."""
    import SimpleITK as sitk

    shutil.copytree(volumes, folder)
    array = sitk.GetArrayFromImage(sitk.ReadImage(str(volumes / "case1.nii.gz")))[3]
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.25, 1.5))
    image.SetOrigin((7.0, -3.5))
    sitk.WriteImage(image, str(folder / "slice.nii.gz"))
    return folder


@pytest.fixture(scope="module")
def cli(tmp_path_factory, run_2d, run_3d, nifti_dir, monai_env, monai_bundle):
    """Export both bundles and run every MONAI command once, concurrently."""
    root = tmp_path_factory.mktemp("cli")
    bundles = {"2d": export_bundle(run_2d, root / "models" / "acdc_tiny"),
               "3d": export_bundle(run_3d, root / "models" / "la_tiny")}
    inputs = {"2d": _with_a_2d_image(nifti_dir, root / "nifti_2d"), "3d": nifti_dir}
    commands, outputs = {}, {}
    for kind, bundle in bundles.items():
        outputs[kind] = root / f"out_{kind}"
        commands[f"run_{kind}"] = [
            "run", "--config_file", bundle / "configs/inference.json", "--meta_file", bundle / "configs/metadata.json",
            "--bundle_root", bundle, "--dataset_dir", inputs[kind], "--output_dir", outputs[kind],
        ]
        commands[f"net_in_out_{kind}"] = [
            "verify_net_in_out", "network_def", "--meta_file", bundle / "configs/metadata.json",
            "--config_file", bundle / "configs/inference.json", "--n", "1", "--device", "cpu",
        ]
    commands["metadata"] = ["verify_metadata", "--meta_file", bundles["2d"] / "configs/metadata.json",
                            "--filepath", SCHEMA_PATH]
    commands = {name: [str(a) for a in args] for name, args in commands.items()}
    return {"bundles": bundles, "inputs": inputs, "outputs": outputs, "results": monai_bundle(commands, monai_env, REPO)}


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"{' '.join(result.args)}\n{result.stdout[-3000:]}"


@pytest.mark.parametrize("kind", KINDS)
def test_monai_bundle_run_writes_the_masks_of_medkd_predict(cli, tmp_path, kind, run_2d, run_3d):
    _ok(cli["results"][f"run_{kind}"])
    inputs = cli["inputs"][kind]
    expected = predict_paths({"2d": run_2d, "3d": run_3d}[kind], inputs, tmp_path / "medkd")
    assert len(expected) == len(list(inputs.glob("*.nii.gz"))) >= 2
    for path in expected:
        ours, theirs = nib.load(path), nib.load(cli["outputs"][kind] / path.name)
        mask, bundle_mask = np.asanyarray(ours.dataobj), np.asanyarray(theirs.dataobj)
        assert bundle_mask.dtype == np.uint8 and bundle_mask.shape == mask.shape
        assert len(np.unique(mask)) > 1, "trivial mask: the equality would prove nothing"
        np.testing.assert_array_equal(bundle_mask, mask)
        np.testing.assert_allclose(theirs.affine, ours.affine, atol=1e-5)
        source = nib.load(inputs / path.name.replace("_seg", ""))
        np.testing.assert_allclose(theirs.affine, source.affine, atol=1e-5)
        assert not np.allclose(source.affine, np.eye(4))


@pytest.mark.parametrize("kind", KINDS)
def test_verify_net_in_out_accepts_the_bundle(cli, kind):
    result = cli["results"][f"net_in_out_{kind}"]
    _ok(result)
    assert "verified with no error" in result.stdout


def test_verify_net_in_out_rejects_wrong_output_channels(cli, tmp_path):
    from monai.bundle import verify_net_in_out

    bundle = cli["bundles"]["2d"]
    pred = ("network_data_format", "outputs", "pred")
    meta = _break_metadata(bundle, tmp_path, lambda m: m[pred[0]][pred[1]][pred[2]].update(num_channels=3))
    with pytest.raises(ValueError, match="output channel number `4` doesn't match: `3`"):
        verify_net_in_out("network_def", meta_file=str(meta), config_file=str(bundle / "configs/inference.json"), n=1,
                          device="cpu")


def test_verify_metadata_accepts_the_bundle_offline(cli):
    result = cli["results"]["metadata"]
    _ok(result)
    assert "skipped downloading" in result.stdout and "verified with no error" in result.stdout


@pytest.mark.parametrize(
    "edit, match",
    [
        (lambda m: m.pop("authors"), "'authors' is a required property"),
        (lambda m: m["network_data_format"]["inputs"]["image"].pop("modality"), "'modality' is a required property"),
        (lambda m: m.update(version="first"), "'first' does not match"),
    ],
)
def test_verify_metadata_rejects_broken_metadata(cli, tmp_path, edit, match):
    from monai.bundle import verify_metadata

    meta = _break_metadata(cli["bundles"]["2d"], tmp_path, edit)
    with pytest.raises(ValueError, match=match):
        verify_metadata(meta_file=str(meta), filepath=str(SCHEMA_PATH))
