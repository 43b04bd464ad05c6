"""The layering contract: ``hw`` <- ``sim`` <- ``driver`` <- applications, checked by
import-linter against the contracts in ``pyproject.toml``."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _contracts():
    with open(REPO_ROOT / "pyproject.toml", "rb") as f:
        return tomllib.load(f)["tool"]["importlinter"]["contracts"]


def test_contract_names_every_layer():
    top = next(c for c in _contracts() if "containers" not in c)
    assert top["type"] == "layers"
    assert top["layers"][-3:] == ["driver", "sim", "hw"]


def test_imports_keep_the_layers():
    linter = Path(sys.executable).parent / "lint-imports"
    command = str(linter) if linter.exists() else shutil.which("lint-imports")
    assert command, "import-linter is required: pip install import-linter"
    result = subprocess.run([command, "--no-cache"], cwd=REPO_ROOT, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "broken" in result.stdout and "0 broken" in result.stdout, result.stdout[-2000:]
