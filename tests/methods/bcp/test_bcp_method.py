# SPDX-License-Identifier: Apache-2.0
"""BCP registers itself: its Method record resolves to BCP's real parts; the package imports lazily (no torch until
a name is used) and keeps its public names."""

from __future__ import annotations

import argparse
import subprocess
import sys

import medkd.methods.bcp as bcp_package
from medkd.methods import get_method


def test_bcp_record_resolves_to_its_parts():
    from medkd.cli.bcp import add_parser
    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.eval_run import evaluate_run
    from medkd.methods.bcp.predict import load_run_predictor
    from medkd.methods.bcp.trainer import train_bcp

    method = get_method("bcp")
    assert method is bcp_package.BCP and method.kind == "segmentation"
    assert method.resolve("config_class") is BCPConfig and method.resolve("train") is train_bcp
    assert method.resolve("evaluate") is evaluate_run and method.resolve("load_predictor") is load_run_predictor
    assert method.resolve("cli") is add_parser
    sub = argparse.ArgumentParser().add_subparsers()
    method.resolve("cli")(sub)
    assert "bcp" in sub.choices


def test_bundle_spec_reference_resolves_to_bcps_segmentation_spec():
    method = get_method("bcp")
    assert method.bundle_spec.startswith("medkd.methods.bcp.bundle:")
    spec = method.resolve("bundle_spec")
    assert spec.method == "bcp" and spec.kind == method.kind


def test_package_names_stay_importable_and_mix_is_the_function():
    import medkd.methods.bcp.steps  # noqa: F401 - imports the submodule medkd.methods.bcp.mix first
    from medkd.methods.bcp import BCPConfig, box_mask, mix, train_bcp, trainer

    assert callable(mix) and mix.__module__ == "medkd.methods.bcp.mix"
    assert BCPConfig.__name__ == "BCPConfig" and callable(box_mask) and callable(train_bcp)
    assert trainer.__name__ == "medkd.methods.bcp.trainer"
    assert set(bcp_package.__all__) <= set(dir(bcp_package))
    for name in bcp_package.__all__:
        assert getattr(bcp_package, name) is not None


def test_importing_the_package_imports_no_torch():
    code = "import sys, medkd.methods.bcp as b; b.BCP; b.BCPConfig; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_one_network_builder_and_one_device_resolver():
    import torch

    from medkd.methods.bcp.config import BCPConfig
    from medkd.methods.bcp.trainer import build_student, run_device

    cfg = BCPConfig(net="bcp_unet2d_half", num_classes=4, patch=(32, 32), device="cpu")

    def conv(net: torch.nn.Module) -> torch.Tensor:
        return next(m.weight for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.in_channels > 1)

    trained = conv(build_student(cfg))  # training default (cfg.channels_last)
    assert trained.is_contiguous(memory_format=torch.channels_last) and not trained.is_contiguous()
    exported = conv(build_student(cfg, channels_last=False))  # bundle export
    assert exported.is_contiguous() and exported.shape == trained.shape
    assert run_device(cfg).type == "cpu"
