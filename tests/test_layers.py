# SPDX-License-Identifier: Apache-2.0
"""The import contracts of ``.importlinter`` (DESIGN.md's layers, engine independence, no cycles) hold.

Runs import-linter (``lint-imports``) on the repository; a copy of ``medkd/`` with a planted upward import shows the
contracts can fail.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("importlinter", reason='import-linter is not installed (pip install "medkd[dev]")')

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / ".importlinter"
_RUN = "import sys; from importlinter.cli import lint_imports_command; sys.exit(lint_imports_command())"


def _config_args(config: Path) -> list[str]:
    """import-linter 2.17+ takes the config file as an argument; older 2.x versions as ``--config``."""
    major, minor = (int(p) for p in importlib.metadata.version("import-linter").split(".")[:2])
    return [str(config)] if (major, minor) >= (2, 17) else ["--config", str(config)]


def _lint(cwd: Path, config: Path = CONFIG) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", _RUN, *_config_args(config), "--no-cache", "--no-logo"]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300, check=False)


def _broken(proc: subprocess.CompletedProcess[str]) -> str:
    """The report's "Broken contracts" section (or all of it), for the assertion message."""
    out = proc.stdout + proc.stderr
    return out[out.find("Broken contracts") :] if "Broken contracts" in out else out


def test_import_contracts_hold() -> None:
    proc = _lint(ROOT)
    assert "Contracts:" in proc.stdout, _broken(proc)
    assert proc.returncode == 0, "import contracts broken:\n" + _broken(proc)
    assert " 0 broken" in proc.stdout


@pytest.mark.parametrize(
    "plants, contract",
    [
        ({"engine/task.py": "medkd.methods.bcp.losses"}, "engine imports nothing from"),
        ({"nets/factory.py": "medkd.bundle.layout"}, "dependencies point down"),
        ({"config.py": "medkd.nets"}, "dependencies point down"),
        # same layer, so only the cycle contract sees it
        (
            {"data/sampler.py": "medkd.metrics.components", "metrics/components.py": "medkd.data.sampler"},
            "no import cycles",
        ),
    ],
)
def test_contracts_catch_a_planted_import(tmp_path: Path, plants: dict[str, str], contract: str) -> None:
    shutil.copytree(ROOT / "medkd", tmp_path / "medkd", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(CONFIG, tmp_path / ".importlinter")
    for module, imported in plants.items():
        path = tmp_path / "medkd" / module
        path.write_text(path.read_text() + f"\nimport {imported}\n")
    proc = _lint(tmp_path, tmp_path / ".importlinter")
    assert proc.returncode != 0, proc.stdout
    broken = _broken(proc)
    assert contract in broken, broken
